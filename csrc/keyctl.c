// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Raw keyctl(2)/add_key(2)/request_key(2) calls for quichsd; see keyctl.h for
 * the contract. glibc has no wrappers for these (libkeyutils does, but is not
 * a dependency), so they go through syscall().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/keyctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "keyctl.h"

static long ret_or_errno(long rc)
{
	return rc < 0 ? -errno : rc;
}

static long keyctl5(int op, unsigned long a2, unsigned long a3,
		    unsigned long a4, unsigned long a5)
{
	return ret_or_errno(syscall(SYS_keyctl, op, a2, a3, a4, a5));
}

/* Serials travel as int (key_serial_t); sign-extend negative KEY_SPEC_* ids. */
#define SERIAL(x) ((unsigned long)(long)(x))

long quichsd_key_read(int32_t key, void *buf, size_t buflen)
{
	return keyctl5(KEYCTL_READ, SERIAL(key), (unsigned long)buf, buflen, 0);
}

long quichsd_key_describe(int32_t key, char *buf, size_t buflen)
{
	return keyctl5(KEYCTL_DESCRIBE, SERIAL(key), (unsigned long)buf, buflen,
		       0);
}

long quichsd_key_search(int32_t keyring, const char *type, const char *desc,
			int32_t dest)
{
	return keyctl5(KEYCTL_SEARCH, SERIAL(keyring), (unsigned long)type,
		       (unsigned long)desc, SERIAL(dest));
}

long quichsd_key_link(int32_t key, int32_t keyring)
{
	return keyctl5(KEYCTL_LINK, SERIAL(key), SERIAL(keyring), 0, 0);
}

long quichsd_key_unlink(int32_t key, int32_t keyring)
{
	return keyctl5(KEYCTL_UNLINK, SERIAL(key), SERIAL(keyring), 0, 0);
}

long quichsd_key_setperm(int32_t key, uint32_t perm)
{
	return keyctl5(KEYCTL_SETPERM, SERIAL(key), perm, 0, 0);
}

long quichsd_key_invalidate(int32_t key)
{
	return keyctl5(KEYCTL_INVALIDATE, SERIAL(key), 0, 0, 0);
}

long quichsd_key_get_keyring_id(int32_t id, int create)
{
	return keyctl5(KEYCTL_GET_KEYRING_ID, SERIAL(id), (unsigned long)create,
		       0, 0);
}

long quichsd_key_join_session_keyring(const char *name)
{
	return keyctl5(KEYCTL_JOIN_SESSION_KEYRING, (unsigned long)name, 0, 0,
		       0);
}

long quichsd_add_key(const char *type, const char *desc, const void *payload,
		     size_t plen, int32_t keyring)
{
	return ret_or_errno(syscall(SYS_add_key, type, desc, payload, plen,
				    SERIAL(keyring)));
}

long quichsd_request_key(const char *type, const char *desc, int32_t dest)
{
	return ret_or_errno(syscall(SYS_request_key, type, desc, (char *)NULL,
				    SERIAL(dest)));
}
