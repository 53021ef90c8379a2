/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The IPPROTO_QUIC socket ABI (Linux in-kernel QUIC, lxin/quic uapi), restated
 * for quichsd from our notes in spec/kernel-quic-abi.md §1.2 and §1.3.
 *
 * Field names follow the kernel's so code reads the same on both sides.
 * Layouts are the natural C layouts on Linux; tests/unit/test_abi_structs.py
 * pins every size and offset so a change here cannot go unnoticed.
 */
#ifndef QUICHSD_QUIC_ABI_H
#define QUICHSD_QUIC_ABI_H

#include <stdint.h>
#include <sys/socket.h>

/* ---- protocol and option level ---------------------------------------- */

#define IPPROTO_QUIC 261
#define SOL_QUIC 288

/* ---- ancillary data (cmsg_type at level SOL_QUIC) ---------------------- */

enum quic_cmsg_type {
	QUIC_STREAM_INFO = 0,    /* data: struct quic_stream_info */
	QUIC_HANDSHAKE_INFO = 1, /* data: struct quic_handshake_info */
};

/* ---- stream ids (RFC 9000 §2.1: the two low bits give the type) --------- */

#define QUIC_STREAM_TYPE_SERVER_MASK 0x01
#define QUIC_STREAM_TYPE_UNI_MASK 0x02
#define QUIC_STREAM_TYPE_MASK 0x03

/* ---- versions ---------------------------------------------------------- */

#define QUIC_VERSION_V1 0x00000001u
#define QUIC_VERSION_V2 0x6b3343cfu

/* ---- buffer sizes ------------------------------------------------------ */

#define QUIC_CRYPTO_SECRET_BUFFER_SIZE 48 /* fits a SHA-384 traffic secret */
#define QUIC_CLOSE_PHRASE_BUFFER_SIZE 64  /* NUL included: 63 usable bytes */

/*
 * ---- message flags ------------------------------------------------------
 * The kernel reuses MSG_* bits that have no meaning on a QUIC socket, so these
 * are aliases, not new bits.
 */
#define MSG_QUIC_STREAM_NEW MSG_SYN
#define MSG_QUIC_STREAM_FIN MSG_FIN
#define MSG_QUIC_STREAM_UNI MSG_CONFIRM
#define MSG_QUIC_STREAM_DONTWAIT MSG_WAITFORONE
#define MSG_QUIC_STREAM_SNDBLOCK MSG_ERRQUEUE
#define MSG_QUIC_DATAGRAM MSG_RST
#define MSG_QUIC_NOTIFICATION MSG_MORE /* only ever returned in msg_flags */

/* ---- encryption levels: NOT in TLS epoch order (APP is 0) --------------- */

enum quic_crypto_level {
	QUIC_CRYPTO_APP = 0,
	QUIC_CRYPTO_INITIAL = 1,
	QUIC_CRYPTO_HANDSHAKE = 2,
	QUIC_CRYPTO_EARLY = 3,
	QUIC_CRYPTO_MAX = 4,
};

/* ---- socket options (level SOL_QUIC) ----------------------------------- */

#define QUIC_SOCKOPT_EVENT 0
#define QUIC_SOCKOPT_STREAM_OPEN 1
#define QUIC_SOCKOPT_STREAM_RESET 2
#define QUIC_SOCKOPT_STREAM_STOP_SENDING 3
#define QUIC_SOCKOPT_CONNECTION_ID 4
#define QUIC_SOCKOPT_CONNECTION_CLOSE 5
#define QUIC_SOCKOPT_CONNECTION_MIGRATION 6
#define QUIC_SOCKOPT_KEY_UPDATE 7
#define QUIC_SOCKOPT_TRANSPORT_PARAM 8
#define QUIC_SOCKOPT_CONFIG 9
#define QUIC_SOCKOPT_TOKEN 10
#define QUIC_SOCKOPT_ALPN 11
#define QUIC_SOCKOPT_SESSION_TICKET 12
#define QUIC_SOCKOPT_CRYPTO_SECRET 13
#define QUIC_SOCKOPT_TRANSPORT_PARAM_EXT 14

/* ---- events (first byte of a MSG_QUIC_NOTIFICATION item) ---------------- */

enum quic_event_type {
	QUIC_EVENT_NONE = 0,
	QUIC_EVENT_STREAM_UPDATE = 1,
	QUIC_EVENT_STREAM_MAX_DATA = 2,
	QUIC_EVENT_STREAM_MAX_STREAM = 3,
	QUIC_EVENT_CONNECTION_ID = 4,
	QUIC_EVENT_CONNECTION_CLOSE = 5,
	QUIC_EVENT_CONNECTION_MIGRATION = 6,
	QUIC_EVENT_KEY_UPDATE = 7,
	QUIC_EVENT_NEW_TOKEN = 8,
	QUIC_EVENT_NEW_SESSION_TICKET = 9,
	QUIC_EVENT_MAX = 10,
};

/* ---- stream states reported by QUIC_EVENT_STREAM_UPDATE ---------------- */

enum quic_stream_state {
	QUIC_STREAM_SEND_STATE_READY = 0,
	QUIC_STREAM_SEND_STATE_SEND = 1,
	QUIC_STREAM_SEND_STATE_SENT = 2,
	QUIC_STREAM_SEND_STATE_RECVD = 3,
	QUIC_STREAM_SEND_STATE_RESET_SENT = 4,
	QUIC_STREAM_SEND_STATE_RESET_RECVD = 5,
	QUIC_STREAM_RECV_STATE_RECV = 6,
	QUIC_STREAM_RECV_STATE_SIZE_KNOWN = 7,
	QUIC_STREAM_RECV_STATE_RECVD = 8,
	QUIC_STREAM_RECV_STATE_READ = 9,
	QUIC_STREAM_RECV_STATE_RESET_RECVD = 10,
	QUIC_STREAM_RECV_STATE_RESET_READ = 11,
};

/* ---- congestion control (quic_config.congestion_control_algo) ---------- */

enum quic_cong_algo {
	QUIC_CONG_ALG_RENO = 0,
	QUIC_CONG_ALG_CUBIC = 1,
	QUIC_CONG_ALG_MAX = 2,
};

/* ---- cipher types: the <linux/tls.h> numbers, the only ones accepted ---- */

#ifndef TLS_CIPHER_AES_GCM_128
#define TLS_CIPHER_AES_GCM_128 51
#endif
#ifndef TLS_CIPHER_AES_GCM_256
#define TLS_CIPHER_AES_GCM_256 52
#endif
#ifndef TLS_CIPHER_AES_CCM_128
#define TLS_CIPHER_AES_CCM_128 53
#endif
#ifndef TLS_CIPHER_CHACHA20_POLY1305
#define TLS_CIPHER_CHACHA20_POLY1305 54
#endif

/* ---- transport error codes (RFC 9000 §20.1, RFC 9368 §10.2) ------------ */

enum quic_transport_error {
	QUIC_TRANSPORT_ERROR_NONE = 0x00,
	QUIC_TRANSPORT_ERROR_INTERNAL = 0x01,
	QUIC_TRANSPORT_ERROR_CONNECTION_REFUSED = 0x02,
	QUIC_TRANSPORT_ERROR_FLOW_CONTROL = 0x03,
	QUIC_TRANSPORT_ERROR_STREAM_LIMIT = 0x04,
	QUIC_TRANSPORT_ERROR_STREAM_STATE = 0x05,
	QUIC_TRANSPORT_ERROR_FINAL_SIZE = 0x06,
	QUIC_TRANSPORT_ERROR_FRAME_ENCODING = 0x07,
	QUIC_TRANSPORT_ERROR_TRANSPORT_PARAM = 0x08,
	QUIC_TRANSPORT_ERROR_CONNECTION_ID_LIMIT = 0x09,
	QUIC_TRANSPORT_ERROR_PROTOCOL_VIOLATION = 0x0a,
	QUIC_TRANSPORT_ERROR_INVALID_TOKEN = 0x0b,
	QUIC_TRANSPORT_ERROR_APPLICATION = 0x0c,
	QUIC_TRANSPORT_ERROR_CRYPTO_BUF_EXCEEDED = 0x0d,
	QUIC_TRANSPORT_ERROR_KEY_UPDATE = 0x0e,
	QUIC_TRANSPORT_ERROR_AEAD_LIMIT_REACHED = 0x0f,
	QUIC_TRANSPORT_ERROR_NO_VIABLE_PATH = 0x10,
	QUIC_TRANSPORT_ERROR_VERSION_NEGOTIATION = 0x11,
	/* 0x100 + TLS alert, up to 0x1ff (RFC 9001 §4.8) */
	QUIC_TRANSPORT_ERROR_CRYPTO = 0x0100,
};

/* ---- structures (spec §1.3) -------------------------------------------- */

/* cmsg QUIC_HANDSHAKE_INFO: the level of the handshake bytes sent or read. */
struct quic_handshake_info {
	uint8_t crypto_level; /* enum quic_crypto_level */
};

/* cmsg QUIC_STREAM_INFO and QUIC_SOCKOPT_STREAM_OPEN. */
struct quic_stream_info {
	int64_t stream_id; /* -1: next / last opened stream */
	uint32_t stream_flags; /* MSG_QUIC_STREAM_* */
};

/*
 * QUIC_SOCKOPT_TRANSPORT_PARAM. Times are microseconds here, milliseconds on
 * the wire. On set, only non-zero fields change the current value.
 */
struct quic_transport_param {
	uint8_t remote; /* 0: our parameters, 1: the peer's */
	uint8_t disable_active_migration;
	uint8_t grease_quic_bit;
	uint8_t stateless_reset;
	uint8_t disable_1rtt_encryption;
	uint8_t disable_compatible_version;
	uint8_t active_connection_id_limit;
	uint8_t ack_delay_exponent;
	uint16_t max_datagram_frame_size;
	uint16_t max_udp_payload_size;
	uint32_t max_idle_timeout;
	uint32_t max_ack_delay;
	uint16_t max_streams_bidi;
	uint16_t max_streams_uni;
	uint64_t max_data;
	uint64_t max_stream_data_bidi_local;
	uint64_t max_stream_data_bidi_remote;
	uint64_t max_stream_data_uni;
};

/* QUIC_SOCKOPT_CONFIG. Zero means "unchanged" / "default" throughout. */
struct quic_config {
	uint32_t version;
	uint32_t plpmtud_probe_interval;
	uint32_t initial_smoothed_rtt;
	uint32_t payload_cipher_type; /* TLS_CIPHER_*: a hint for the agent */
	uint8_t congestion_control_algo;
	uint8_t validate_peer_address;
	uint8_t stream_data_nodelay;
	uint8_t receive_session_ticket; /* seconds to wait for a ticket */
	uint8_t certificate_request; /* 0 ignore, 1 request, 2 require */
	uint8_t reserved[3];
	uint32_t keepalive_probe_interval;
};

/*
 * QUIC_SOCKOPT_CRYPTO_SECRET. The order is send, level (not the draft's
 * level, send): the kernel code is the authority.
 */
struct quic_crypto_secret {
	uint8_t send; /* 0: receive secret, otherwise send secret */
	uint8_t level; /* enum quic_crypto_level */
	uint16_t reserved;
	uint32_t type; /* TLS_CIPHER_* */
	uint8_t secret[QUIC_CRYPTO_SECRET_BUFFER_SIZE]; /* zero padded */
};

/* QUIC_SOCKOPT_STREAM_RESET and QUIC_SOCKOPT_STREAM_STOP_SENDING. */
struct quic_errinfo {
	int64_t stream_id;
	uint32_t errcode;
};

/* QUIC_SOCKOPT_CONNECTION_ID and QUIC_EVENT_CONNECTION_ID. */
struct quic_connection_id_info {
	uint8_t dest; /* 1: destination CIDs, 0: source CIDs */
	uint8_t reserved[3];
	uint32_t active;
	uint32_t prior_to;
};

/* QUIC_SOCKOPT_EVENT. */
struct quic_event_option {
	uint8_t type; /* enum quic_event_type */
	uint8_t on;
};

/* QUIC_EVENT_STREAM_UPDATE. */
struct quic_stream_update {
	int64_t id;
	uint8_t state; /* enum quic_stream_state */
	uint8_t reserved[3];
	uint32_t errcode;
	uint64_t finalsz;
};

/* QUIC_EVENT_STREAM_MAX_DATA. */
struct quic_stream_max_data {
	int64_t id;
	uint64_t max_data;
};

/* QUIC_SOCKOPT_CONNECTION_CLOSE and QUIC_EVENT_CONNECTION_CLOSE. */
struct quic_connection_close {
	uint32_t errcode;
	uint8_t frame; /* frame type, truncated to 8 bits */
	uint8_t reserved[3];
	uint8_t phrase[QUIC_CLOSE_PHRASE_BUFFER_SIZE]; /* NUL terminated */
};

/* The payload after the type byte of a notification. */
union quic_event {
	struct quic_stream_update update;
	struct quic_stream_max_data max_data;
	struct quic_connection_close close;
	struct quic_connection_id_info info;
	uint64_t max_stream;
	uint8_t local_migration;
	uint8_t key_update_phase;
};

#endif /* QUICHSD_QUIC_ABI_H */
