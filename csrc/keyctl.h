/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * quichsd's thin wrappers over the kernel key management syscalls (keyctl(2),
 * add_key(2), request_key(2)), made with syscall() so that nothing beyond libc
 * is needed (no libkeyutils). Python reaches them through the cffi module
 * quichsd._sysabi (declared in sysabi.cdef); quichsd/daemon/keyring.py is the
 * only intended caller. Spec: tlshd-behaviour §5.
 *
 * Conventions: every function returns a serial, a count or 0 on success and
 * -errno on failure. Key serials are int32_t, as the kernel's key_serial_t.
 */
#ifndef QUICHSD_KEYCTL_H
#define QUICHSD_KEYCTL_H

#include <stddef.h>
#include <stdint.h>

/*
 * KEYCTL_READ: copy at most buflen bytes of the payload into buf (buf may be
 * NULL when buflen is 0). Returns the payload's full size, which may exceed
 * buflen: the caller sizes its buffer by a first call and retries if the key
 * grew in between. For a keyring the payload is its array of member serials.
 */
long quichsd_key_read(int32_t key, void *buf, size_t buflen);

/* KEYCTL_DESCRIBE: "type;uid;gid;perm;description" plus NUL; sized like read. */
long quichsd_key_describe(int32_t key, char *buf, size_t buflen);

/* KEYCTL_SEARCH: recursive search of keyring; links the hit into dest if non-zero. */
long quichsd_key_search(int32_t keyring, const char *type, const char *desc,
			int32_t dest);

/* KEYCTL_LINK / KEYCTL_UNLINK. */
long quichsd_key_link(int32_t key, int32_t keyring);
long quichsd_key_unlink(int32_t key, int32_t keyring);

/* KEYCTL_SETPERM: set the possessor/user/group/other permission mask. */
long quichsd_key_setperm(int32_t key, uint32_t perm);

/* KEYCTL_INVALIDATE: destroy the key now (used to clean up after tests). */
long quichsd_key_invalidate(int32_t key);

/* KEYCTL_GET_KEYRING_ID: resolve a KEY_SPEC_* id; create it when create != 0. */
long quichsd_key_get_keyring_id(int32_t id, int create);

/*
 * KEYCTL_JOIN_SESSION_KEYRING: name NULL starts a new anonymous session keyring,
 * otherwise joins (or creates) the named one. Affects the calling thread's
 * credentials only.
 */
long quichsd_key_join_session_keyring(const char *name);

/* add_key(2); payload may be NULL with plen 0 (keyrings). */
long quichsd_add_key(const char *type, const char *desc, const void *payload,
		     size_t plen, int32_t keyring);

/*
 * request_key(2) with no callout: searches the caller's thread, process and
 * session keyrings without invoking /sbin/request-key; links the hit into
 * dest if non-zero.
 */
long quichsd_request_key(const char *type, const char *desc, int32_t dest);

#endif /* QUICHSD_KEYCTL_H */
