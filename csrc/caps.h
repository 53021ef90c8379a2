/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * quichsd's wrappers for capability and credential syscalls, used to drop from
 * root to an unprivileged user while keeping CAP_NET_ADMIN (ACCEPT needs it,
 * tlshd-behaviour §1.9). Python reaches them through the cffi module
 * quichsd._sysabi; quichsd/daemon/privileges.py is the only intended caller.
 *
 * Capabilities, securebits and (at the syscall level) uids are per *thread* on
 * Linux: capget/capset and prctl act on the calling thread only. setresuid and
 * setresgid here are glibc's, which apply the change to every thread of the
 * process; the caller drops privileges before any other thread exists.
 *
 * Capability sets are 64-bit masks (bit n = capability n, as in
 * /proc/PID/status). Every function returns 0 (or a value) on success and
 * -errno on failure.
 */
#ifndef QUICHSD_CAPS_H
#define QUICHSD_CAPS_H

#include <stdint.h>

/* capget(2) for thread tid (0 = the calling thread), _LINUX_CAPABILITY_VERSION_3. */
int quichsd_capget(int tid, uint64_t *effective, uint64_t *permitted,
		   uint64_t *inheritable);

/* capset(2) on the calling thread. */
int quichsd_capset(uint64_t effective, uint64_t permitted,
		   uint64_t inheritable);

/* prctl(PR_GET_SECUREBITS) / prctl(PR_SET_SECUREBITS, bits). */
int quichsd_get_securebits(void);
int quichsd_set_securebits(unsigned long bits);

/* prctl(PR_SET_KEEPCAPS, on) / prctl(PR_GET_KEEPCAPS). */
int quichsd_set_keepcaps(int on);
int quichsd_get_keepcaps(void);

/* prctl(PR_CAPBSET_READ, cap) (1 or 0) / prctl(PR_CAPBSET_DROP, cap). */
int quichsd_capbset_read(int cap);
int quichsd_capbset_drop(int cap);

/* prctl(PR_SET_NO_NEW_PRIVS, 1): execve can never grant privileges again. */
int quichsd_set_no_new_privs(void);

/* glibc setresuid(2)/setresgid(2); (uid_t)-1 leaves an id unchanged. */
int quichsd_setresuid(uint32_t ruid, uint32_t euid, uint32_t suid);
int quichsd_setresgid(uint32_t rgid, uint32_t egid, uint32_t sgid);

#endif /* QUICHSD_CAPS_H */
