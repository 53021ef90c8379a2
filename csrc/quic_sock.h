/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * quichsd's small C helpers for IPPROTO_QUIC sockets (csrc/quic_sock.c): the
 * sendmsg/recvmsg calls that carry SOL_QUIC ancillary data, and get/setsockopt
 * calls whose buffer is both input and output. Python reaches them through the
 * cffi module quichsd._quic_abi (declared in quic_abi.cdef).
 *
 * Conventions: every function returns a count or 0 on success and -errno on
 * failure; none of them keeps state, blocks longer than the syscall it makes,
 * or changes the file's flags.
 */
#ifndef QUICHSD_QUIC_SOCK_H
#define QUICHSD_QUIC_SOCK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "quic_abi.h"

/* What one recvmsg returned (spec kernel-quic-abi §1.5: exactly one of these). */
enum quichsd_recv_kind {
	QUICHSD_RECV_HANDSHAKE = 1, /* CRYPTO bytes; level from QUIC_HANDSHAKE_INFO */
	QUICHSD_RECV_STREAM = 2,    /* stream bytes; id/flags from QUIC_STREAM_INFO */
	QUICHSD_RECV_EVENT = 3,     /* MSG_QUIC_NOTIFICATION: type byte + payload */
	QUICHSD_RECV_DATAGRAM = 4,  /* MSG_QUIC_DATAGRAM */
};

/*
 * Room for every cmsg the kernel attaches to one QUIC item (at most one of the
 * two), plus one foreign cmsg of up to 64 bytes that a non-QUIC socket might add,
 * so the QUIC one is never the one that gets truncated.
 */
#define QUICHSD_RECV_CONTROL_SIZE                               \
	(CMSG_SPACE(sizeof(struct quic_stream_info)) +          \
	 CMSG_SPACE(sizeof(struct quic_handshake_info)) + CMSG_SPACE(64))

/* ---- pure helpers (no syscall): build and read the ancillary data -------- */

/* Write one SOL_QUIC/QUIC_HANDSHAKE_INFO cmsg into control[0..space).
 * Returns the msg_controllen to use, or -ENOBUFS. */
ssize_t quic_cmsg_handshake(void *control, size_t space, uint8_t level);

/* Same for SOL_QUIC/QUIC_STREAM_INFO. */
ssize_t quic_cmsg_stream(void *control, size_t space, int64_t stream_id,
			 uint32_t stream_flags);

/*
 * Decide what a received item is from its ancillary data and msg_flags.
 * Outputs are always written: level 0, stream_id -1, stream_flags 0 unless
 * the item says otherwise. Stream data whose cmsg did not arrive (MSG_CTRUNC,
 * or a socket that is not QUIC) is STREAM with stream_id -1 and the FIN bit
 * taken from msg_flags, as the kernel ORs it there in that case.
 * Returns 0, or -EBADMSG for a malformed SOL_QUIC cmsg.
 */
int quic_recv_classify(const void *control, size_t controllen, int msg_flags,
		       int *kind, uint8_t *level, int64_t *stream_id,
		       uint32_t *stream_flags);

/* ---- syscall wrappers ---------------------------------------------------- */

/* sendmsg of handshake bytes at `level` (one QUIC_HANDSHAKE_INFO cmsg). */
ssize_t quic_sendmsg_handshake(int fd, const void *buf, size_t len,
			       uint8_t level, int flags);

/* sendmsg of stream bytes with one QUIC_STREAM_INFO cmsg. */
ssize_t quic_sendmsg_stream(int fd, const void *buf, size_t len,
			    int64_t stream_id, uint32_t stream_flags, int flags);

/* recvmsg of one item of any kind; see quic_recv_classify for the outputs.
 * msg_flags gets the kernel's msg_flags (MSG_EOR, MSG_CTRUNC, ...). Outputs are
 * reset first, also when the call fails. -EBADMSG means the item arrived with a
 * malformed SOL_QUIC cmsg (and has been consumed). */
ssize_t quic_recvmsg_any(int fd, void *buf, size_t len, int flags, int *kind,
			 uint8_t *level, int64_t *stream_id,
			 uint32_t *stream_flags, int *msg_flags);

/* accept4(SOCK_CLOEXEC) without the peer address: the new fd or -errno. Blocks
 * only if the listener's fd is blocking. */
int quic_accept(int fd);

/* getsockopt whose buffer carries input too; *len is in/out. 0 or -errno. */
int quic_getsockopt_inout(int fd, int optname, void *buf, unsigned int *len);
int quic_getsockopt_level(int fd, int level, int optname, void *buf,
			  unsigned int *len);

/* setsockopt; buf may be NULL when len is 0. 0 or -errno. */
int quic_setsockopt(int fd, int optname, const void *buf, unsigned int len);
int quic_setsockopt_level(int fd, int level, int optname, const void *buf,
			  unsigned int len);

#endif /* QUICHSD_QUIC_SOCK_H */
