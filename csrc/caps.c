// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Capability, securebits and credential calls for quichsd; see caps.h for the
 * contract. capget/capset go through syscall() with the kernel's own
 * structures, so libcap is not needed.
 */
#define _GNU_SOURCE /* setresuid, setresgid */
#include <errno.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "caps.h"

static int ret_or_errno(long rc)
{
	return rc < 0 ? -errno : (int)rc;
}

int quichsd_capget(int tid, uint64_t *effective, uint64_t *permitted,
		   uint64_t *inheritable)
{
	struct __user_cap_header_struct hdr = {
		.version = _LINUX_CAPABILITY_VERSION_3,
		.pid = tid,
	};
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = { 0 };

	if (syscall(SYS_capget, &hdr, data) < 0)
		return -errno;
	*effective = (uint64_t)data[1].effective << 32 | data[0].effective;
	*permitted = (uint64_t)data[1].permitted << 32 | data[0].permitted;
	*inheritable = (uint64_t)data[1].inheritable << 32 | data[0].inheritable;
	return 0;
}

int quichsd_capset(uint64_t effective, uint64_t permitted,
		   uint64_t inheritable)
{
	struct __user_cap_header_struct hdr = {
		.version = _LINUX_CAPABILITY_VERSION_3,
		.pid = 0,
	};
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {
		{ .effective = (uint32_t)effective,
		  .permitted = (uint32_t)permitted,
		  .inheritable = (uint32_t)inheritable },
		{ .effective = (uint32_t)(effective >> 32),
		  .permitted = (uint32_t)(permitted >> 32),
		  .inheritable = (uint32_t)(inheritable >> 32) },
	};

	return ret_or_errno(syscall(SYS_capset, &hdr, data));
}

int quichsd_get_securebits(void)
{
	return ret_or_errno(prctl(PR_GET_SECUREBITS, 0, 0, 0, 0));
}

int quichsd_set_securebits(unsigned long bits)
{
	return ret_or_errno(prctl(PR_SET_SECUREBITS, bits, 0, 0, 0));
}

int quichsd_set_keepcaps(int on)
{
	return ret_or_errno(prctl(PR_SET_KEEPCAPS, (unsigned long)!!on, 0, 0, 0));
}

int quichsd_get_keepcaps(void)
{
	return ret_or_errno(prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0));
}

int quichsd_capbset_read(int cap)
{
	return ret_or_errno(prctl(PR_CAPBSET_READ, (unsigned long)cap, 0, 0, 0));
}

int quichsd_capbset_drop(int cap)
{
	return ret_or_errno(prctl(PR_CAPBSET_DROP, (unsigned long)cap, 0, 0, 0));
}

int quichsd_set_no_new_privs(void)
{
	return ret_or_errno(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
}

int quichsd_setresuid(uint32_t ruid, uint32_t euid, uint32_t suid)
{
	return ret_or_errno(setresuid(ruid, euid, suid));
}

int quichsd_setresgid(uint32_t rgid, uint32_t egid, uint32_t sgid)
{
	return ret_or_errno(setresgid(rgid, egid, sgid));
}
