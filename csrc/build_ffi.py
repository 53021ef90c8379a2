"""cffi build script: compiles the IPPROTO_QUIC ABI (csrc/) into quichsd._quic_abi.

The module holds the uapi view (quic_abi.h: constants, struct layouts) and the socket
helpers of quic_sock.c (SOL_QUIC cmsgs, in/out getsockopt), declared in quic_abi.cdef.
"""
import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef((HERE / "quic_abi.cdef").read_text())
ffibuilder.set_source(
    "quichsd._quic_abi",
    '#include "quic_abi.h"\n#include "quic_sock.h"\n',
    # setuptools wants relative source paths; the build runs from the project root.
    sources=[os.path.relpath(HERE / "quic_sock.c")],
    include_dirs=[str(HERE)],
    extra_compile_args=["-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
