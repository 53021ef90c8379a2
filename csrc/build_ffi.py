"""cffi build script: compiles the IPPROTO_QUIC ABI (csrc/) into quichsd._quic_abi."""
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef((HERE / "quic_abi.cdef").read_text())
ffibuilder.set_source(
    "quichsd._quic_abi",
    '#include "quic_abi.h"\n',
    include_dirs=[str(HERE)],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
