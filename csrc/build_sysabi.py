"""cffi build script: compiles the keyring and privilege syscalls (csrc/) into quichsd._sysabi.

A module of its own, apart from quichsd._quic_abi: these wrap Linux process and key
management calls (keyctl.c: keyctl/add_key/request_key; caps.c: capget/capset, prctl
securebits, setresuid) and the simulation's timerfd (timerfd.c), not the IPPROTO_QUIC ABI.
Declared in sysabi.cdef; needs only libc and the kernel uapi headers (no libkeyutils, no libcap).
"""
import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef((HERE / "sysabi.cdef").read_text())
ffibuilder.set_source(
    "quichsd._sysabi",
    "#include <linux/capability.h>\n#include <linux/keyctl.h>\n"
    "#include <linux/securebits.h>\n"
    '#include "keyctl.h"\n#include "caps.h"\n#include "timerfd.h"\n',
    # setuptools wants relative source paths; the build runs from the project root.
    sources=[os.path.relpath(HERE / name) for name in ("keyctl.c", "caps.c", "timerfd.c")],
    include_dirs=[str(HERE)],
    extra_compile_args=["-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
