// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The parts of the IPPROTO_QUIC socket API that Python's socket module cannot
 * express well (spec kernel-quic-abi §1.5, §2.2, §2.3, §7): SOL_QUIC ancillary
 * data on sendmsg/recvmsg, and getsockopt buffers that carry input.
 *
 * Written for quichsd from the spec notes; see quic_sock.h for the contract.
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "quic_sock.h"

/* A control buffer aligned for struct cmsghdr, as CMSG_FIRSTHDR expects. */
union cmsg_room {
	struct cmsghdr align;
	unsigned char bytes[QUICHSD_RECV_CONTROL_SIZE];
};

static ssize_t put_quic_cmsg(void *control, size_t space, int type,
			     const void *data, size_t datalen)
{
	struct msghdr msg = { .msg_control = control, .msg_controllen = space };
	struct cmsghdr *cmsg;

	if (control == NULL || space < CMSG_SPACE(datalen))
		return -ENOBUFS;
	memset(control, 0, CMSG_SPACE(datalen));
	cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_QUIC;
	cmsg->cmsg_type = type;
	cmsg->cmsg_len = CMSG_LEN(datalen);
	memcpy(CMSG_DATA(cmsg), data, datalen);
	return (ssize_t)CMSG_SPACE(datalen);
}

ssize_t quic_cmsg_handshake(void *control, size_t space, uint8_t level)
{
	struct quic_handshake_info info;

	memset(&info, 0, sizeof(info));
	info.crypto_level = level;
	return put_quic_cmsg(control, space, QUIC_HANDSHAKE_INFO, &info,
			     sizeof(info));
}

ssize_t quic_cmsg_stream(void *control, size_t space, int64_t stream_id,
			 uint32_t stream_flags)
{
	struct quic_stream_info info;

	memset(&info, 0, sizeof(info));
	info.stream_id = stream_id;
	info.stream_flags = stream_flags;
	return put_quic_cmsg(control, space, QUIC_STREAM_INFO, &info,
			     sizeof(info));
}

int quic_recv_classify(const void *control, size_t controllen, int msg_flags,
		       int *kind, uint8_t *level, int64_t *stream_id,
		       uint32_t *stream_flags)
{
	struct msghdr msg = {
		.msg_control = (void *)control,
		.msg_controllen = control ? controllen : 0,
	};
	struct quic_handshake_info hs;
	struct quic_stream_info si;
	int have_hs = 0, have_si = 0;
	struct cmsghdr *cmsg;

	*kind = QUICHSD_RECV_STREAM;
	*level = 0;
	*stream_id = -1;
	*stream_flags = 0;

	for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
		size_t datalen;

		if (cmsg->cmsg_level != SOL_QUIC)
			continue; /* not ours: a non-QUIC socket's own cmsg */
		if (cmsg->cmsg_len < CMSG_LEN(0) ||
		    cmsg->cmsg_len > controllen -
				     (size_t)((const char *)cmsg - (const char *)control))
			return -EBADMSG;
		datalen = cmsg->cmsg_len - CMSG_LEN(0);
		if (cmsg->cmsg_type == QUIC_HANDSHAKE_INFO) {
			if (datalen < sizeof(hs))
				return -EBADMSG;
			memcpy(&hs, CMSG_DATA(cmsg), sizeof(hs));
			have_hs = 1;
		} else if (cmsg->cmsg_type == QUIC_STREAM_INFO) {
			if (datalen < sizeof(si))
				return -EBADMSG;
			memcpy(&si, CMSG_DATA(cmsg), sizeof(si));
			have_si = 1;
		}
	}

	if (have_hs) {
		*kind = QUICHSD_RECV_HANDSHAKE;
		*level = hs.crypto_level;
	} else if (msg_flags & MSG_QUIC_NOTIFICATION) {
		*kind = QUICHSD_RECV_EVENT;
	} else if (msg_flags & MSG_QUIC_DATAGRAM) {
		*kind = QUICHSD_RECV_DATAGRAM;
	} else if (have_si) {
		*stream_id = si.stream_id;
		*stream_flags = si.stream_flags;
	} else {
		/* §1.5: the cmsg did not fit, so the kernel put FIN in msg_flags. */
		*stream_flags = (uint32_t)msg_flags & MSG_QUIC_STREAM_FIN;
	}
	return 0;
}

static ssize_t send_with_cmsg(int fd, const void *buf, size_t len, int flags,
			      void *control, ssize_t controllen)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = control,
		.msg_controllen = (size_t)controllen,
	};
	ssize_t sent;

	if (controllen < 0)
		return controllen;
	sent = sendmsg(fd, &msg, flags);
	return sent < 0 ? -errno : sent;
}

ssize_t quic_sendmsg_handshake(int fd, const void *buf, size_t len,
			       uint8_t level, int flags)
{
	union cmsg_room room;

	return send_with_cmsg(fd, buf, len, flags, room.bytes,
			      quic_cmsg_handshake(room.bytes,
						  sizeof(room.bytes), level));
}

ssize_t quic_sendmsg_stream(int fd, const void *buf, size_t len,
			    int64_t stream_id, uint32_t stream_flags, int flags)
{
	union cmsg_room room;

	return send_with_cmsg(fd, buf, len, flags, room.bytes,
			      quic_cmsg_stream(room.bytes, sizeof(room.bytes),
					       stream_id, stream_flags));
}

ssize_t quic_recvmsg_any(int fd, void *buf, size_t len, int flags, int *kind,
			 uint8_t *level, int64_t *stream_id,
			 uint32_t *stream_flags, int *msg_flags)
{
	union cmsg_room room;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = room.bytes,
		.msg_controllen = sizeof(room.bytes),
	};
	ssize_t got;
	int err;

	/* Pitfall 21: never let a previous call's outputs leak into this one. */
	*kind = 0;
	*level = 0;
	*stream_id = -1;
	*stream_flags = 0;
	*msg_flags = 0;

	got = recvmsg(fd, &msg, flags);
	if (got < 0)
		return -errno;
	*msg_flags = msg.msg_flags;
	err = quic_recv_classify(room.bytes, msg.msg_controllen, msg.msg_flags,
				 kind, level, stream_id, stream_flags);
	return err < 0 ? err : got;
}

int quic_accept(int fd)
{
	int conn = accept4(fd, NULL, NULL, SOCK_CLOEXEC);

	return conn < 0 ? -errno : conn;
}

int quic_getsockopt_level(int fd, int level, int optname, void *buf,
			  unsigned int *len)
{
	socklen_t optlen = *len;

	if (getsockopt(fd, level, optname, buf, &optlen) < 0)
		return -errno;
	*len = optlen;
	return 0;
}

int quic_getsockopt_inout(int fd, int optname, void *buf, unsigned int *len)
{
	return quic_getsockopt_level(fd, SOL_QUIC, optname, buf, len);
}

int quic_setsockopt_level(int fd, int level, int optname, const void *buf,
			  unsigned int len)
{
	return setsockopt(fd, level, optname, buf, len) < 0 ? -errno : 0;
}

int quic_setsockopt(int fd, int optname, const void *buf, unsigned int len)
{
	return quic_setsockopt_level(fd, SOL_QUIC, optname, buf, len);
}
