"""cffi build script: the kTLS uapi (<linux/tls.h>) into quichsd._ktls.

A module of its own, apart from quichsd._quic_abi and quichsd._sysabi: after a TLS 1.3
handshake over TCP (quichsd/tcp/), the application traffic keys go to the kernel as one of
these crypto_info structs with setsockopt(SOL_TLS, TLS_TX/TLS_RX). Declared in ktls.cdef;
headers only, no C code to compile besides cffi's own.
"""
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef((HERE / "ktls.cdef").read_text())
ffibuilder.set_source(
    "quichsd._ktls",
    '#include "ktls.h"\n',
    include_dirs=[str(HERE)],
    extra_compile_args=["-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
