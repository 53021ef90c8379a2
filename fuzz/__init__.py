"""Coverage-guided fuzzing of every parser of untrusted bytes (issue 10).

One module per target; each has `one_input(data: bytes) -> None`, which returns quietly for
input the parser accepts or rejects with its documented error, and raises for a bug (any other
exception, a broken round trip, an engine that ends in internal_error). The module's docstring
says what counts as a bug. `fuzz.run` drives them under atheris (libFuzzer); without atheris
the same functions replay the committed corpora (tests/unit/test_fuzz_corpora.py).

    corpus/<target>/       seeds, made by fuzz/make_seeds.py from the RFC vectors and from
                           real in-memory handshakes of our engine and simulation
    regressions/<target>/  inputs that once crashed a target, kept after the fix
    work/<target>/         what libFuzzer adds while running (not committed)
    artifacts/<target>/    a crashing input, written by libFuzzer (not committed)
"""
from __future__ import annotations

# name -> module under fuzz/; the order `make fuzz` runs them in.
TARGETS: dict[str, str] = {
    "tls_messages": "fuzz.tls_messages",
    "tls_engine": "fuzz.tls_engine",
    "transport_params": "fuzz.transport_params",
    "quic_packets": "fuzz.quic_packets",
    "quic_frames": "fuzz.quic_frames",
    "quic_connection": "fuzz.quic_connection",
    "netlink_attrs": "fuzz.netlink_attrs",
    "daemon_config": "fuzz.daemon_config",
}
