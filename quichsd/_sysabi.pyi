# Stub for the cffi extension built from csrc/ (csrc/build_sysabi.py): keyctl and
# capability syscalls. cffi objects are dynamic, so behaviour is checked by tests.
from typing import Any

ffi: Any
lib: Any
