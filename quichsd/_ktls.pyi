# Stub for the cffi extension built from csrc/ (csrc/build_ktls.py): the kTLS uapi of
# <linux/tls.h>. cffi objects are dynamic, so behaviour is checked by tests.
from typing import Any

ffi: Any
lib: Any
