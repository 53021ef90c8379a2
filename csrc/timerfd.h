/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A CLOCK_REALTIME timerfd armed at absolute times, for the UDP simulation's
 * background thread (quichsd/sock/sim/reactor.py): socket calls re-arm it with
 * one syscall instead of waking the thread. Returns -errno on failure.
 */
#ifndef QUICHSD_TIMERFD_H
#define QUICHSD_TIMERFD_H

#include <stdint.h>

/* timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC): the fd or -errno. */
int quichsd_timerfd_create(void);

/* Expire at the absolute time sec.nsec (CLOCK_REALTIME); 0.0 disarms. 0 or -errno. */
int quichsd_timerfd_arm(int fd, int64_t sec, int64_t nsec);

#endif
