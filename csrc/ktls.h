/* quichsd._ktls: the kTLS uapi, with the one number older headers may lack. */
#ifndef QUICHSD_KTLS_H
#define QUICHSD_KTLS_H

#include <sys/socket.h>
#include <netinet/tcp.h>
#include <linux/tls.h>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

/* linux/tls.h of kernels that have it (6.15 on); the option number is ABI. */
#ifdef TLS_TX_MAX_PAYLOAD_LEN
#define QUICHSD_TLS_TX_MAX_PAYLOAD_LEN TLS_TX_MAX_PAYLOAD_LEN
#else
#define QUICHSD_TLS_TX_MAX_PAYLOAD_LEN 5
#endif

#endif
