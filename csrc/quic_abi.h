/* IPPROTO_QUIC uapi constants and structures (placeholder; filled in by the ABI work). */
#ifndef QUICHSD_QUIC_ABI_H
#define QUICHSD_QUIC_ABI_H
#include <stdint.h>
#define IPPROTO_QUIC 261
#define SOL_QUIC 288
#endif
