"""The backend contract (quichsd/sock/base.py): both backends implement QuicSocketBackend,
and as_backend() turns everything the handshake calls accept into one."""
from __future__ import annotations

import gc
import weakref

import pytest

from quichsd.sock import QuicSocket, QuicSocketBackend, as_backend
from quichsd.sock.kernel import KernelQuicSocket
from quichsd.sock.sim.simsocket import SimQuicSocket


def test_both_backends_implement_the_contract(dgram_pair) -> None:
    kernel, sim = KernelQuicSocket(sock=dgram_pair[0]), SimQuicSocket()
    assert isinstance(kernel, QuicSocketBackend) and isinstance(sim, QuicSocketBackend)
    # What the handshake and the daemon read off the contract, not off the class name.
    assert not kernel.batches_output and sim.batches_output
    assert kernel.sock is dgram_pair[0] and sim.sock is None
    assert kernel.accepted_peer is None and sim.accepted_peer is None


def test_kernel_batch_is_a_no_op_that_nests(dgram_pair) -> None:
    a, b = KernelQuicSocket(sock=dgram_pair[0]), dgram_pair[1]
    with a.batch(), a.batch():
        a.send_stream(b"x", 0)
        assert b.recv(16) == b"x"  # sent at the call, not at the end of the batch


def test_as_backend_passes_backends_and_unwraps_quic_sockets(dgram_pair) -> None:
    sim = SimQuicSocket()
    assert as_backend(sim) is sim
    wrapped = QuicSocket(backend="sim")
    assert as_backend(wrapped) is wrapped.backend


@pytest.mark.parametrize("form", ["socket", "fd"])
def test_as_backend_wraps_a_dup_of_a_kernel_socket(dgram_pair, form) -> None:
    a, b = dgram_pair
    backend = as_backend(a if form == "socket" else a.fileno())
    assert isinstance(backend, KernelQuicSocket)
    assert backend.fileno() != a.fileno()
    backend.close()
    a.send(b"still open")  # closing the backend left the caller's fd alone
    assert b.recv(16) == b"still open"


def test_as_backend_refuses_other_objects() -> None:
    with pytest.raises(TypeError, match="not a QUIC socket"):
        as_backend(object())  # type: ignore[arg-type]
    with pytest.raises(OSError):
        as_backend(-1)  # no such fd: the dup fails (EBADF)


def test_sim_batch_leaves_no_reference_cycle() -> None:
    """A closed simulated socket goes when its last reference does, not at the next
    cyclic collection (a batch object kept on the socket cost ~4 % of handshake rate)."""
    sim = SimQuicSocket()
    with sim.batch(), sim.batch():
        pass
    sim.close()
    gone = weakref.ref(sim)
    gc.disable()
    try:
        del sim
        assert gone() is None
    finally:
        gc.enable()
