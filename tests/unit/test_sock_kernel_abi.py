"""The kernel backend's C helpers (csrc/quic_sock.c) and KernelQuicSocket.

Most of it runs for real on any Linux: the helpers make real syscalls on AF_UNIX/UDP/
AF_PACKET sockets. One fact shapes these tests: AF_UNIX (like UDP) silently drops
ancillary data of any level but SOL_SOCKET, so a SOL_QUIC cmsg cannot cross a socketpair
(test_af_unix_drops_sol_quic_cmsgs pins that). The cmsg bytes are therefore checked where
they are built (the same builder the sendmsg helpers use), as the kernel receives them
(strace of the real sendmsg), and on the way in through the classifier that recvmsg uses,
fed both hand-made control data and real kernel-made SCM_CREDENTIALS.

The last part needs IPPROTO_QUIC and skips here; the QEMU tier runs it.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from quichsd import abi
from quichsd import kernel_numbers as kn
from quichsd.abi import ffi, lib
from quichsd.sock.base import Address, QuicSocketBackend, RecvItem, RecvKind
from quichsd.sock.kernel import KernelQuicSocket, kernel_quic_available
from tests.sockets import NO_QUIC

needs_quic = pytest.mark.skipif(not kernel_quic_available(), reason=NO_QUIC)

CMSGHDR = struct.Struct("=Qii")  # struct cmsghdr on Linux/x86_64: len, level, type
FIN = lib.MSG_QUIC_STREAM_FIN


def cmsg(level: int, type_: int, data: bytes, length: int | None = None) -> bytes:
    """One cmsg as the kernel lays it out, padded to CMSG_SPACE."""
    length = socket.CMSG_LEN(len(data)) if length is None else length
    raw = CMSGHDR.pack(length, level, type_) + data
    return raw.ljust(socket.CMSG_SPACE(len(data)), b"\0")


def classify(control: bytes, msg_flags: int = 0) -> tuple[int, tuple[int, int, int, int]]:
    kind, level = ffi.new("int *"), ffi.new("uint8_t *")
    sid, sflags = ffi.new("int64_t *"), ffi.new("uint32_t *")
    buf = ffi.new("char[]", control or b"\0")
    rc = lib.quic_recv_classify(buf, len(control), msg_flags, kind, level, sid, sflags)
    return rc, (kind[0], level[0], sid[0], sflags[0])


def recv_any(fd: int, size: int = 256, flags: int = 0) -> tuple[int, bytes, tuple[int, ...]]:
    buf = ffi.new("char[]", size)
    kind, level = ffi.new("int *"), ffi.new("uint8_t *")
    sid, sflags, mflags = ffi.new("int64_t *"), ffi.new("uint32_t *"), ffi.new("int *")
    # Pre-set outputs to junk: the helper must reset them (pitfall 21).
    kind[0], level[0], sid[0], sflags[0], mflags[0] = 99, 7, 1234, 0xFFFF, 0x7FFF
    rc = lib.quic_recvmsg_any(fd, buf, size, flags, kind, level, sid, sflags, mflags)
    data = ffi.buffer(buf, rc)[:] if rc > 0 else b""
    return rc, data, (kind[0], level[0], sid[0], sflags[0], mflags[0])


# ---- building the cmsg: what sendmsg hands the kernel --------------------------------


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_handshake_cmsg_is_cmsg_len_1(level):
    control = ffi.new("char[]", 64)
    used = lib.quic_cmsg_handshake(control, 64, level)
    assert used == socket.CMSG_SPACE(1) == 24
    raw = ffi.buffer(control, used)[:]
    assert CMSGHDR.unpack_from(raw) == (socket.CMSG_LEN(1), lib.SOL_QUIC, lib.QUIC_HANDSHAKE_INFO)
    assert socket.CMSG_LEN(1) == 17
    assert raw[16:17] == abi.pack_handshake_info(level) == bytes([level])
    assert raw[17:] == bytes(7)  # padding is zeroed, never stack garbage


def test_stream_cmsg_is_cmsg_len_16():
    control = ffi.new("char[]", 64)
    used = lib.quic_cmsg_stream(control, 64, 0x1234_5678_9ABC, FIN | lib.MSG_QUIC_STREAM_NEW)
    assert used == socket.CMSG_LEN(16) == socket.CMSG_SPACE(16) == 32
    raw = ffi.buffer(control, used)[:]
    assert CMSGHDR.unpack_from(raw) == (32, lib.SOL_QUIC, lib.QUIC_STREAM_INFO)
    assert raw[16:] == abi.pack_stream_info(0x1234_5678_9ABC, FIN | lib.MSG_QUIC_STREAM_NEW)
    assert abi.unpack_stream_info(raw[16:]) == (0x1234_5678_9ABC, FIN | lib.MSG_QUIC_STREAM_NEW)


def test_cmsg_builders_refuse_short_space():
    control = ffi.new("char[]", 64)
    assert lib.quic_cmsg_handshake(control, 23, 1) == -errno.ENOBUFS
    assert lib.quic_cmsg_stream(control, 31, 0, 0) == -errno.ENOBUFS
    assert lib.quic_cmsg_handshake(ffi.NULL, 64, 1) == -errno.ENOBUFS


def _strace_sendmsg(script: str, tmp_path) -> list[str]:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    out = tmp_path / "strace.txt"
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=sendmsg", "-e", "signal=none", "-o", str(out),
         sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60,
    )
    if proc.returncode != 0 or not out.exists():
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()[:200]}")
    return [line for line in out.read_text().splitlines() if "sendmsg(" in line]


def test_kernel_sees_one_sol_quic_cmsg_per_send(tmp_path):
    """The msghdr as the sendmsg syscall receives it (strace decodes it)."""
    script = (
        "import socket\n"
        "from quichsd.abi import ffi, lib\n"
        "a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "d = ffi.from_buffer(b'hello')\n"
        "assert lib.quic_sendmsg_handshake(a.fileno(), d, 5, 2, lib.MSG_MORE) == 5\n"
        "assert lib.quic_sendmsg_stream(a.fileno(), d, 5, 4, lib.MSG_QUIC_STREAM_FIN,"
        " lib.MSG_DONTWAIT) == 5\n"
    )
    handshake, stream = _strace_sendmsg(script, tmp_path)
    level = r"cmsg_level=(?:0x120|288|SOL_QUIC)\b"
    assert re.search(r"msg_control=\[\{cmsg_len=17, " + level + r".*?, cmsg_type=(?:0x)?1\}\]", handshake)
    assert "msg_controllen=24" in handshake and handshake.rstrip().endswith("MSG_MORE) = 5")
    assert re.search(r"msg_control=\[\{cmsg_len=32, " + level + r".*?, cmsg_type=0\}\]", stream)
    assert "msg_controllen=32" in stream and stream.rstrip().endswith("MSG_DONTWAIT) = 5")


# ---- reading it back: the classifier quic_recvmsg_any uses ------------------------------


@pytest.mark.parametrize("level", [1, 2])
def test_classify_handshake_level_round_trip(level):
    control = ffi.new("char[]", 64)
    used = lib.quic_cmsg_handshake(control, 64, level)
    rc, out = classify(ffi.buffer(control, used)[:], lib.MSG_EOR)
    assert rc == 0 and out == (lib.QUICHSD_RECV_HANDSHAKE, level, -1, 0)


def test_classify_stream_info_round_trip():
    for stream_id, flags in [(0, 0), (5, FIN), (2**62 - 1, FIN), (-1, 0)]:
        rc, out = classify(cmsg(lib.SOL_QUIC, lib.QUIC_STREAM_INFO, abi.pack_stream_info(stream_id, flags)))
        assert rc == 0 and out == (lib.QUICHSD_RECV_STREAM, 0, stream_id, flags)


def test_classify_events_and_datagrams_by_msg_flags():
    rc, out = classify(b"", lib.MSG_QUIC_NOTIFICATION | lib.MSG_EOR)
    assert rc == 0 and out == (lib.QUICHSD_RECV_EVENT, 0, -1, 0)
    rc, out = classify(b"", lib.MSG_QUIC_DATAGRAM | lib.MSG_EOR)
    assert rc == 0 and out == (lib.QUICHSD_RECV_DATAGRAM, 0, -1, 0)


def test_classify_ctrunc_takes_fin_from_msg_flags():
    """§1.5: a stream cmsg that did not fit arrives as MSG_CTRUNC with FIN in msg_flags."""
    rc, out = classify(b"", lib.MSG_CTRUNC | FIN)
    assert rc == 0 and out == (lib.QUICHSD_RECV_STREAM, 0, -1, FIN)
    rc, out = classify(b"", lib.MSG_CTRUNC)
    assert rc == 0 and out == (lib.QUICHSD_RECV_STREAM, 0, -1, 0)


def test_classify_skips_foreign_cmsgs():
    creds = cmsg(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, struct.pack("=iII", 1, 0, 0))
    hs = cmsg(lib.SOL_QUIC, lib.QUIC_HANDSHAKE_INFO, b"\x02")
    rc, out = classify(creds + hs)
    assert rc == 0 and out == (lib.QUICHSD_RECV_HANDSHAKE, 2, -1, 0)
    # A SOL_QUIC cmsg type we do not know is not an error either.
    rc, out = classify(cmsg(lib.SOL_QUIC, 9, b"\x00" * 4))
    assert rc == 0 and out == (lib.QUICHSD_RECV_STREAM, 0, -1, 0)


def test_classify_rejects_malformed_quic_cmsgs():
    short_stream = cmsg(lib.SOL_QUIC, lib.QUIC_STREAM_INFO, bytes(8))
    assert classify(short_stream)[0] == -errno.EBADMSG
    empty_hs = cmsg(lib.SOL_QUIC, lib.QUIC_HANDSHAKE_INFO, b"")
    assert classify(empty_hs)[0] == -errno.EBADMSG
    past_end = cmsg(lib.SOL_QUIC, lib.QUIC_STREAM_INFO, bytes(16), length=200)
    assert classify(past_end)[0] == -errno.EBADMSG


# ---- the syscalls for real on a socketpair ----------------------------------------------


def test_af_unix_drops_sol_quic_cmsgs(dgram_pair):
    """Why the cmsg is not checked across a socketpair: the kernel never delivers it."""
    a, b = dgram_pair
    assert a.sendmsg([b"x"], [(lib.SOL_QUIC, lib.QUIC_HANDSHAKE_INFO, b"\x01")]) == 1
    assert b.recvmsg(16, 256) == (b"x", [], 0, None)
    d = ffi.from_buffer(b"y")
    assert lib.quic_sendmsg_handshake(a.fileno(), d, 1, 1, 0) == 1
    assert b.recvmsg(16, 256) == (b"y", [], 0, None)


def test_sendmsg_handshake_and_recvmsg_any_move_the_bytes(dgram_pair):
    a, b = dgram_pair
    payload = bytes(range(256)) * 3
    d = ffi.from_buffer(payload)
    assert lib.quic_sendmsg_handshake(a.fileno(), d, len(payload), 1, lib.MSG_DONTWAIT) == len(payload)
    rc, data, (kind, level, sid, sflags, mflags) = recv_any(b.fileno(), 1024)
    assert rc == len(payload) and data == payload
    # No QUIC cmsg can arrive here (see above): plain data, stream id unknown, outputs reset.
    assert (kind, level, sid, sflags) == (lib.QUICHSD_RECV_STREAM, 0, -1, 0)
    assert mflags & lib.MSG_CTRUNC == 0


def test_sendmsg_stream_moves_the_bytes_and_truncation_shows(dgram_pair):
    a, b = dgram_pair
    d = ffi.from_buffer(b"0123456789")
    assert lib.quic_sendmsg_stream(a.fileno(), d, 10, 8, FIN, 0) == 10
    rc, data, out = recv_any(b.fileno(), 4)
    assert rc == 4 and data == b"0123"
    assert out[-1] & socket.MSG_TRUNC  # datagram cut: the kernel's msg_flags come through


def test_recvmsg_any_hands_a_control_buffer_and_skips_kernel_cmsgs(dgram_pair):
    """Real kernel-made ancillary data (SCM_CREDENTIALS) arrives and is walked over."""
    a, b = dgram_pair
    b.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    a.send(b"probe")
    assert b.recvmsg(16, 256)[1][0][:2] == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
    a.send(b"creds")
    rc, data, (kind, level, sid, sflags, mflags) = recv_any(b.fileno())
    assert (rc, data) == (5, b"creds")
    assert (kind, sid) == (lib.QUICHSD_RECV_STREAM, -1)
    assert mflags & lib.MSG_CTRUNC == 0  # our control buffer had room for it
    control = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(1) + socket.CMSG_SPACE(12)
    assert control <= lib.QUICHSD_RECV_CONTROL_SIZE


def test_recvmsg_any_would_block_and_flags_pass_through(dgram_pair):
    _, b = dgram_pair
    rc, _, out = recv_any(b.fileno(), flags=lib.MSG_DONTWAIT)
    assert rc == -errno.EAGAIN
    assert out == (0, 0, -1, 0, 0)  # reset even when the call fails


def test_getsockopt_level_in_out_buffer_on_udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        value = ffi.new("int *", 65536)
        assert lib.quic_setsockopt_level(s.fileno(), socket.SOL_SOCKET, socket.SO_RCVBUF, value, 4) == 0
        buf = ffi.new("char[]", 16)
        length = ffi.new("unsigned int *", 16)
        assert lib.quic_getsockopt_level(s.fileno(), socket.SOL_SOCKET, socket.SO_RCVBUF, buf, length) == 0
        assert length[0] == 4  # the kernel's optlen comes back out
        got = struct.unpack("=i", ffi.buffer(buf, 4)[:])[0]
        assert got == s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * 65536
        # SOL_QUIC on a socket that is not QUIC: same errno as Python's own call gives.
        length[0] = 16
        expected = _python_errno(s.getsockopt, lib.SOL_QUIC, lib.QUIC_SOCKOPT_CONFIG, 16)
        assert lib.quic_getsockopt_inout(s.fileno(), lib.QUIC_SOCKOPT_CONFIG, buf, length) == -expected
        expected = _python_errno(s.setsockopt, lib.SOL_QUIC, lib.QUIC_SOCKOPT_KEY_UPDATE, None, 0)
        assert lib.quic_setsockopt(s.fileno(), lib.QUIC_SOCKOPT_KEY_UPDATE, ffi.NULL, 0) == -expected


def _python_errno(call, *args) -> int:
    with pytest.raises(OSError) as caught:
        call(*args)
    return caught.value.errno


def test_getsockopt_level_reads_its_input():
    """PACKET_HDRLEN is a getsockopt that reads an int (TPACKET version) from the buffer
    and answers in the same buffer: the in/out path the QUIC options need."""
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except OSError as exc:
        pytest.skip(f"no AF_PACKET socket here: {exc}")
    sol_packet, packet_hdrlen = 263, 11  # <linux/if_packet.h>
    with s:
        answers = {}
        for version in (0, 1, 2):  # TPACKET_V1..V3
            buf = ffi.new("char[]", struct.pack("=i", version) + bytes(4))
            length = ffi.new("unsigned int *", 8)
            assert lib.quic_getsockopt_level(s.fileno(), sol_packet, packet_hdrlen, buf, length) == 0
            assert length[0] == 4
            answers[version] = struct.unpack("=i", ffi.buffer(buf, 4)[:])[0]
        assert answers[2] > answers[1] >= answers[0] > 2  # header sizes, not the input echoed
        buf = ffi.new("char[]", struct.pack("=i", 99))
        length = ffi.new("unsigned int *", 4)
        assert lib.quic_getsockopt_level(s.fileno(), sol_packet, packet_hdrlen, buf, length) == -errno.EINVAL


def test_helpers_map_errno_on_a_closed_fd():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fd = s.fileno()
    s.close()
    d = ffi.from_buffer(b"x")
    buf, length = ffi.new("char[]", 8), ffi.new("unsigned int *", 8)
    assert lib.quic_sendmsg_handshake(fd, d, 1, 1, 0) == -errno.EBADF
    assert lib.quic_sendmsg_stream(fd, d, 1, 0, 0, 0) == -errno.EBADF
    assert recv_any(fd)[0] == -errno.EBADF
    assert lib.quic_getsockopt_inout(fd, lib.QUIC_SOCKOPT_CONFIG, buf, length) == -errno.EBADF
    assert lib.quic_setsockopt(fd, lib.QUIC_SOCKOPT_CONFIG, buf, 8) == -errno.EBADF
    assert lib.quic_accept(fd) == -errno.EBADF


# ---- KernelQuicSocket over a socketpair ------------------------------------------------


@pytest.fixture
def kpair(dgram_pair):
    a, b = dgram_pair
    yield KernelQuicSocket(sock=a), KernelQuicSocket(sock=b)


def test_kernel_socket_is_a_backend(kpair):
    a, _ = kpair
    assert isinstance(a, QuicSocketBackend)
    assert a.fileno() == a.sock.fileno()


def test_send_and_recv_item(kpair):
    a, b = kpair
    assert a.send_handshake(lib.QUIC_CRYPTO_INITIAL, b"\x01\x00\x00\x00", lib.MSG_MORE) == 4
    item = b.recv_item(64)
    assert item == RecvItem(RecvKind.STREAM, b"\x01\x00\x00\x00", None, -1, 0, item.msg_flags)
    assert a.send_stream(bytearray(b"abc"), 4, FIN) == 3
    assert b.recv_item(64).data == b"abc"
    assert a.send_stream(memoryview(b"xyz")[1:]) == 2
    assert b.recv_item(64).data == b"yz"


def test_recv_item_timeouts_and_nonblocking(kpair):
    _, b = kpair
    fd = b.fileno()
    assert os.get_blocking(fd)
    b.settimeout(0.05)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        b.recv_item(64)
    assert 0.04 <= time.monotonic() - start < 2
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv_item(64)
    b.settimeout(None)
    with pytest.raises(BlockingIOError) as caught:
        b.recv_item(64, lib.MSG_DONTWAIT)
    assert caught.value.errno == errno.EAGAIN
    assert os.get_blocking(fd)  # never flipped


def test_blocking_recv_item_waits_for_data(kpair):
    a, b = kpair
    b.settimeout(None)
    timer = threading.Timer(0.05, lambda: a.send_stream(b"late"))
    timer.start()
    try:
        assert b.recv_item(64).data == b"late"
    finally:
        timer.cancel()


def test_nonblocking_fd_stays_nonblocking_and_timeout_still_works(kpair):
    a, b = kpair
    os.set_blocking(b.fileno(), False)
    b.settimeout(0.5)
    threading.Timer(0.05, lambda: a.send_stream(b"nb")).start()
    assert b.recv_item(64).data == b"nb"
    assert not os.get_blocking(b.fileno())


def test_sockopt_errors_raise_oserror_with_errno():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        k = KernelQuicSocket(sock=udp)
        expected = _python_errno(udp.getsockopt, lib.SOL_QUIC, lib.QUIC_SOCKOPT_TRANSPORT_PARAM, 56)
        assert expected in (errno.EOPNOTSUPP, errno.ENOPROTOOPT)
        with pytest.raises(OSError) as caught:
            k.getsockopt(lib.QUIC_SOCKOPT_TRANSPORT_PARAM, b"\x01" + bytes(55))
        assert caught.value.errno == expected
        with pytest.raises(OSError) as caught:
            k.setsockopt(lib.QUIC_SOCKOPT_ALPN, b"h3")
        assert caught.value.errno == _python_errno(udp.setsockopt, lib.SOL_QUIC, lib.QUIC_SOCKOPT_ALPN, b"h3")
        with pytest.raises(ValueError):
            k.getsockopt(lib.QUIC_SOCKOPT_ALPN, -1)
    with pytest.raises(OSError) as caught:
        k.send_handshake(1, b"x")
    assert caught.value.errno == errno.EBADF
    assert k.fileno() is None


def test_from_fd_dups_unless_told_to_own(dgram_pair):
    a, b = dgram_pair
    k = KernelQuicSocket.from_fd(a.fileno())
    assert k.fileno() != a.fileno()
    k.send_stream(b"via dup")
    assert b.recv(64) == b"via dup"
    k.close()
    a.send(b"still open")  # the caller's fd survived
    assert b.recv(64) == b"still open"
    fd = os.dup(a.fileno())
    owned = KernelQuicSocket.from_fd(fd, dup=False)
    assert owned.fileno() == fd
    owned.close()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_from_fd_keeps_a_nonblocking_fds_mode(dgram_pair):
    a, _ = dgram_pair
    os.set_blocking(a.fileno(), False)
    k = KernelQuicSocket.from_fd(a.fileno())
    assert k.gettimeout() == 0.0
    assert not os.get_blocking(a.fileno())
    k.close()


def test_from_fd_keeps_a_blocking_fds_mode_under_a_default_timeout(dgram_pair):
    """socket.setdefaulttimeout() makes Python's socket constructor set O_NONBLOCK: the
    caller's blocking fd is put back; without one, nothing is touched."""
    a, _ = dgram_pair
    assert os.get_blocking(a.fileno())
    saved = socket.getdefaulttimeout()
    try:
        for default in (None, 2.5):
            socket.setdefaulttimeout(default)
            k = KernelQuicSocket.from_fd(a.fileno())
            assert k.gettimeout() is None and os.get_blocking(a.fileno())
            k.close()
    finally:
        socket.setdefaulttimeout(saved)


def test_accept_on_a_unix_listener_honours_the_timeout(tmp_path):
    """accept() through the C helper, on a kind of listener every kernel has."""
    path = str(tmp_path / "listener")
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as raw:
        listener = KernelQuicSocket(sock=raw)
        listener.bind(path)
        listener.listen(4)
        listener.settimeout(0.05)
        with pytest.raises(TimeoutError):
            listener.accept()
        assert os.get_blocking(listener.fileno())
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as client:
            client.connect(path)
            conn = listener.accept()
            assert conn.gettimeout() == 0.05
            client.send(b"hi")
            assert conn.recv_item(16).data == b"hi"
            conn.close()


def test_recv_item_kind_from_string_and_flags():
    item = RecvItem(kind="HANDSHAKE", data=b"x", level=1, msg_flags=lib.MSG_EOR)
    assert item.kind is RecvKind.HANDSHAKE and item.kind == "HANDSHAKE"
    assert item.eor and not item.fin
    assert RecvItem("STREAM", b"", stream_id=0, stream_flags=FIN).fin
    with pytest.raises(ValueError):
        RecvItem("BOGUS", b"")


def test_constants_come_from_the_abi():
    assert (kn.IPPROTO_QUIC, kn.SOL_QUIC) == (261, 288)
    assert kn.QUIC_SOCKOPT_TRANSPORT_PARAM_EXT == 14 and kn.QUIC_SOCKOPT_CRYPTO_SECRET == 13
    assert (kn.MSG_QUIC_NOTIFICATION, kn.MSG_QUIC_DATAGRAM) == (0x8000, 0x1000)
    assert (kn.MSG_EOR, kn.MSG_MORE, kn.MSG_CTRUNC, kn.MSG_BATCH) == (0x80, 0x8000, 0x8, 0x40000)
    assert kn.MSG_DONTWAIT == socket.MSG_DONTWAIT and kn.MSG_NOSIGNAL == socket.MSG_NOSIGNAL
    assert [kn.QUIC_CRYPTO_APP, kn.QUIC_CRYPTO_INITIAL, kn.QUIC_CRYPTO_HANDSHAKE,
            kn.QUIC_CRYPTO_EARLY] == [0, 1, 2, 3]


def test_kernel_quic_available_matches_a_probe():
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 261).close()
        expected = True
    except OSError:
        expected = False
    assert kernel_quic_available() is expected


# ---- a real IPPROTO_QUIC kernel (QEMU tier) ----------------------------------------------


def _errno_of(call, *args) -> int:
    with pytest.raises(OSError) as caught:
        call(*args)
    return caught.value.errno


@needs_quic
def test_quic_socket_default_options():
    with KernelQuicSocket() as s:
        config = abi.unpack_config(s.getsockopt(lib.QUIC_SOCKOPT_CONFIG, 28))
        assert config["initial_smoothed_rtt"] == 333_000
        local = abi.unpack_transport_param(s.getsockopt(lib.QUIC_SOCKOPT_TRANSPORT_PARAM, bytes(56)))
        assert local["max_udp_payload_size"] == 65527
        assert local["ack_delay_exponent"] == 3
        assert local["active_connection_id_limit"] == 7
        assert local["max_idle_timeout"] == 30_000_000
        # EVENT reads `type` from the buffer: all events start off; type 0 is invalid.
        assert s.getsockopt(lib.QUIC_SOCKOPT_EVENT, abi.pack_event_option(1, False)) == b"\x01\x00"
        assert _errno_of(s.getsockopt, lib.QUIC_SOCKOPT_EVENT, b"\x00\x00") == errno.EINVAL
        assert _errno_of(s.getsockopt, lib.QUIC_SOCKOPT_STREAM_RESET, 16) == errno.ENOPROTOOPT
        assert _errno_of(s.getsockopt, 99, 16) == errno.ENOPROTOOPT


@needs_quic
def test_quic_socket_set_then_get_options():
    with KernelQuicSocket() as s:
        s.setsockopt(lib.QUIC_SOCKOPT_ALPN, b"smb, h3")
        assert s.getsockopt(lib.QUIC_SOCKOPT_ALPN, 64) == b"smb,h3"
        s.setsockopt(lib.QUIC_SOCKOPT_EVENT, abi.pack_event_option(lib.QUIC_EVENT_NEW_TOKEN, True))
        assert s.getsockopt(lib.QUIC_SOCKOPT_EVENT, bytes([lib.QUIC_EVENT_NEW_TOKEN, 0]))[1] == 1
        s.setsockopt(lib.QUIC_SOCKOPT_TRANSPORT_PARAM, abi.pack_transport_param(max_idle_timeout=5_000_000))
        local = abi.unpack_transport_param(s.getsockopt(lib.QUIC_SOCKOPT_TRANSPORT_PARAM, bytes(56)))
        assert local["max_idle_timeout"] == 5_000_000
        assert _errno_of(s.setsockopt, lib.QUIC_SOCKOPT_SESSION_TICKET, bytes(63)) == errno.EINVAL
        s.setsockopt(lib.QUIC_SOCKOPT_SESSION_TICKET, bytes(range(256)) * 16)  # 4096: past CPython's 1024
        assert s.getsockopt(lib.QUIC_SOCKOPT_SESSION_TICKET, 4096) == b""  # client, not ESTABLISHING


def _listener() -> tuple[KernelQuicSocket, Address]:
    server = KernelQuicSocket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server, server.getsockname()


@needs_quic
def test_quic_client_connect_handshake_level_rules():
    """spec §1.1, §1.4, §2.3: after connect() the client is ESTABLISHING with Initial keys."""
    server, addr = _listener()
    with server, KernelQuicSocket() as client:
        client.connect(addr)
        blob = client.getsockopt(lib.QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, 512)
        assert 0 < len(blob) <= 512
        initial = abi.pack_crypto_secret(lib.QUIC_CRYPTO_INITIAL, True, lib.TLS_CIPHER_AES_GCM_128,
                                         bytes(32))
        assert _errno_of(client.setsockopt, lib.QUIC_SOCKOPT_CRYPTO_SECRET, initial) == errno.EINVAL
        send = client.send_handshake
        assert _errno_of(send, lib.QUIC_CRYPTO_EARLY, b"\x01\x00\x00\x00") == errno.EINVAL
        assert _errno_of(send, lib.QUIC_CRYPTO_HANDSHAKE, b"\x14\x00\x00\x00") == errno.EINVAL
        assert _errno_of(send, lib.QUIC_CRYPTO_INITIAL, b"") == errno.EMSGSIZE
        assert _errno_of(send, lib.QUIC_CRYPTO_INITIAL, b"x", lib.MSG_PEEK) == errno.EINVAL
        assert _errno_of(client.connect, addr) == errno.EINVAL


@needs_quic
def test_quic_initial_bytes_reach_the_accepted_socket_with_their_level():
    """The handshake-level round trip the socketpair cannot do: client sendmsg at
    INITIAL, server accept() then recvmsg sees QUIC_HANDSHAKE_INFO level 1 and the bytes."""
    # A well-formed, minimal ClientHello without ALPN: if another listener in this boot
    # switched the kernel's ALPN demux on, it must still parse and match (spec §2.7).
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + b"\x00\x00"
    hello = b"\x01" + len(body).to_bytes(3, "big") + body
    server, addr = _listener()
    with server, KernelQuicSocket() as client:
        server.settimeout(10)
        client.connect(addr)
        assert client.send_handshake(lib.QUIC_CRYPTO_INITIAL, hello, lib.MSG_NOSIGNAL) == len(hello)
        with server.accept() as conn:
            conn.settimeout(10)
            got = b""
            while len(got) < len(hello):
                item = conn.recv_item(4096)
                if item.kind is RecvKind.EVENT:
                    continue
                assert item.kind is RecvKind.HANDSHAKE and item.level == lib.QUIC_CRYPTO_INITIAL
                got += item.data
            assert got == hello
            assert item.eor
            assert conn.getpeername()[1] == client.getsockname()[1]
            with pytest.raises(BlockingIOError):
                conn.recv_item(4096, lib.MSG_DONTWAIT)
