# cffi's setuptools hook only exists as a setup() keyword; everything else is in pyproject.toml.
from setuptools import setup

setup(
    cffi_modules=[
        "csrc/build_ffi.py:ffibuilder",  # quichsd._quic_abi: the IPPROTO_QUIC ABI
        "csrc/build_sysabi.py:ffibuilder",  # quichsd._sysabi: keyctl, capabilities
        "csrc/build_ktls.py:ffibuilder",  # quichsd._ktls: kTLS crypto_info (<linux/tls.h>)
    ]
)
