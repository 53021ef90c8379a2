"""quichsd/kernel_numbers.py against the compiled ABI (csrc/quic_abi.h through cffi):
every number the pure-Python module states is the C compiler's, and every level, event,
option and cipher number the C header names is stated."""
from __future__ import annotations

import subprocess
import sys

import pytest

from quichsd import kernel_numbers
from quichsd.abi import ffi, lib
from quichsd.kernel_numbers import CryptoLevel, Direction, QuicEvent

PLAIN = [name for name in kernel_numbers.__all__ if name.isupper()]


@pytest.mark.parametrize("name", PLAIN)
def test_constant_matches_compiled_abi(name: str) -> None:
    assert getattr(kernel_numbers, name) == getattr(lib, name)


@pytest.mark.parametrize(
    ("enum", "c_enum", "prefix"),
    [(CryptoLevel, "enum quic_crypto_level", "QUIC_CRYPTO_"),
     (QuicEvent, "enum quic_event_type", "QUIC_EVENT_")],
)
def test_enum_matches_compiled_abi(enum: type[CryptoLevel] | type[QuicEvent], c_enum: str,
                                   prefix: str) -> None:
    # The C enum's own list of names and values; QUIC_*_MAX is a bound, not a value.
    in_header = {name[len(prefix):]: value for name, value in ffi.typeof(c_enum).relements.items()
                 if not name.endswith("_MAX")}
    assert in_header == {member.name: member.value for member in enum}


@pytest.mark.parametrize("prefix", ["QUIC_SOCKOPT_", "TLS_CIPHER_", "MSG_QUIC_"])
def test_every_header_number_is_stated(prefix: str) -> None:
    in_header = {n for n in dir(lib) if n.startswith(prefix)}
    assert in_header and in_header <= set(PLAIN)


def test_direction_is_the_send_flag() -> None:
    # struct quic_crypto_secret.send: 1 for the key we send with.
    assert (Direction.RECV, Direction.SEND) == (0, 1)


def test_quic_and_tls_load_without_the_compiled_module() -> None:
    """quic/ and tls/ take their numbers from kernel_numbers: importing them (and the TLS
    engine) does not load quichsd._quic_abi."""
    code = (
        "import sys\n"
        "import quichsd.kernel_numbers, quichsd.quic.packet_protection, quichsd.tls.server\n"
        "print('quichsd._quic_abi' in sys.modules)\n"
    )
    # quichsd/__init__ imports the driver (which needs the socket ABI), so the packages are
    # loaded as top-level names from a stub parent package that has no __init__ side effects.
    out = subprocess.run(
        [sys.executable, "-c", _NO_INIT + code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


# Registers `quichsd` as a bare namespace (its __path__ only), so that importing subpackages
# does not run quichsd/__init__.py, which imports the socket layer on purpose.
_NO_INIT = (
    "import sys, types, pathlib, importlib.util\n"
    "spec = importlib.util.find_spec('quichsd')\n"
    "pkg = types.ModuleType('quichsd'); pkg.__path__ = list(spec.submodule_search_locations)\n"
    "sys.modules['quichsd'] = pkg\n"
)
