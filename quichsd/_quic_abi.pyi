# Stub for the cffi extension built from csrc/ (csrc/build_ffi.py): cffi objects are
# dynamic, so the sizes, fields and constants are checked by tests, not by the type checker.
from typing import Any

ffi: Any
lib: Any
