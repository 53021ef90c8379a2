// SPDX-License-Identifier: GPL-2.0-or-later
#include <errno.h>
#include <sys/timerfd.h>
#include <time.h>

#include "timerfd.h"

int quichsd_timerfd_create(void)
{
	int fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

int quichsd_timerfd_arm(int fd, int64_t sec, int64_t nsec)
{
	struct itimerspec spec = {
		.it_interval = { 0, 0 },
		.it_value = { (time_t)sec, (long)nsec },
	};

	return timerfd_settime(fd, TFD_TIMER_ABSTIME, &spec, NULL) < 0 ? -errno : 0;
}
