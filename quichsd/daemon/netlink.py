"""The `handshake` generic netlink family (spec tlshd-behaviour §1, §9.2) on pyroute2.

The family is described in netlink/handshake.yaml; the message classes below mirror it
(tests/daemon/test_netlink.py checks that they agree attribute by attribute).

    ready_msg    READY (1), kernel -> agent, multicast on group "tlshd"; accept attribute set
    accept_msg   ACCEPT (2) request (HANDLER_CLASS) and its unicast reply; accept attribute set
    done_msg     DONE (3) request; done attribute set

`parse_accept(msg)` turns an ACCEPT reply into a dict, `build_done(...)` makes a DONE message,
and `HandshakeFamily` resolves the family by name through pyroute2's GenericNetlinkSocket
(optionally joining "tlshd"), raising `FamilyMissing` if the kernel does not have it.

`HandshakeChannel` is the hot path: a plain AF_NETLINK socket that sends those same message
classes' bytes and decodes the replies by their attribute maps, once the family (and group) id
is known. It does not go through pyroute2's codec per message: `encode(cls, cmd, attrs)` lays
out what `cls(...).encode()` would (the ACCEPT request, whose only attribute is the handler
class, is encoded once per class), and `decode(cls, message)` reads a message into an object
with the same `get_attr`/`get_attrs` as a decoded pyroute2 message, so `parse_accept` and
`ready_handler_class` serve both; tests/daemon/test_netlink.py holds both codecs to the same
bytes and values. Under QEMU pyroute2's codec was about a tenth of a served request's CPU.
pyroute2's synchronous calls run an asyncio loop per request, and a fresh socket costs a
family lookup: on a real kernel under QEMU a fresh HandshakeFamily per ACCEPT and per DONE
was half of a served request's CPU. tlshd opens a fresh socket per ACCEPT and per DONE to
keep replies apart from multicast traffic; a channel that never joins the group, one per
thread, keeps them apart just as well.

Differences from tlshd: repeated PEER_IDENTITY and CERTIFICATE attributes are all kept (tlshd
keeps only the last one); ACCEPT and DONE are sent with NLM_F_ACK so kernel errors (EAGAIN on
ACCEPT, a rejected DONE) are seen instead of lost (§1.7, §9.2.5).
"""
from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, genlmsg, nla
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket

FAMILY_NAME = "handshake"
FAMILY_VERSION = 1
MCAST_GROUP = "tlshd"

HANDSHAKE_CMD_READY = 1
HANDSHAKE_CMD_ACCEPT = 2
HANDSHAKE_CMD_DONE = 3

HANDSHAKE_HANDLER_CLASS_NONE = 0
HANDSHAKE_HANDLER_CLASS_TLSHD = 1

HANDSHAKE_MSG_TYPE_UNSPEC = 0
HANDSHAKE_MSG_TYPE_CLIENTHELLO = 1
HANDSHAKE_MSG_TYPE_SERVERHELLO = 2

HANDSHAKE_AUTH_UNSPEC = 0
HANDSHAKE_AUTH_UNAUTH = 1
HANDSHAKE_AUTH_PSK = 2
HANDSHAKE_AUTH_X509 = 3

MAX_ERRNO = 4095


class FamilyMissing(RuntimeError):
    """The running kernel has no `handshake` generic netlink family."""

    def __init__(self, detail: str = "") -> None:
        msg = "the kernel has no 'handshake' generic netlink family (CONFIG_NET_HANDSHAKE off?)"
        super().__init__(f"{msg}: {detail}" if detail else msg)


# pyroute2 ships no types: its classes are Any to mypy, so a netlink message class (one of
# the pyroute2 subclasses below, read through its nla_map) is a type[Any] here.
MessageClass = type[Any]


class x509_attrs(nla):  # type: ignore[misc]  # subclass of an untyped pyroute2 class
    """The nested x509 attribute set (inside ACCEPT CERTIFICATE)."""

    nla_map = (
        (1, "HANDSHAKE_A_X509_CERT", "int32"),
        (2, "HANDSHAKE_A_X509_PRIVKEY", "int32"),
    )


class _accept_set(genlmsg):  # type: ignore[misc]  # subclass of an untyped pyroute2 class
    """Messages carrying the accept attribute set."""

    # SOCKFD: the kernel's policy said u32 on older kernels; both are 4 bytes.
    nla_map = (
        (1, "HANDSHAKE_A_ACCEPT_SOCKFD", "int32"),
        (2, "HANDSHAKE_A_ACCEPT_HANDLER_CLASS", "uint32"),
        (3, "HANDSHAKE_A_ACCEPT_MESSAGE_TYPE", "uint32"),
        (4, "HANDSHAKE_A_ACCEPT_TIMEOUT", "uint32"),
        (5, "HANDSHAKE_A_ACCEPT_AUTH_MODE", "uint32"),
        (6, "HANDSHAKE_A_ACCEPT_PEER_IDENTITY", "uint32"),
        (7, "HANDSHAKE_A_ACCEPT_CERTIFICATE", "x509_attrs|nested"),
        (8, "HANDSHAKE_A_ACCEPT_PEERNAME", "asciiz"),
        (9, "HANDSHAKE_A_ACCEPT_KEYRING", "uint32"),
    )
    multi_attrs = frozenset({"HANDSHAKE_A_ACCEPT_PEER_IDENTITY", "HANDSHAKE_A_ACCEPT_CERTIFICATE"})
    x509_attrs = x509_attrs


class ready_msg(_accept_set):
    """READY notification (multicast, group "tlshd")."""


class accept_msg(_accept_set):
    """ACCEPT request and reply."""


class done_msg(genlmsg):  # type: ignore[misc]  # subclass of an untyped pyroute2 class
    """DONE request."""

    nla_map = (
        (1, "HANDSHAKE_A_DONE_STATUS", "uint32"),
        (2, "HANDSHAKE_A_DONE_SOCKFD", "int32"),
        (3, "HANDSHAKE_A_DONE_REMOTE_AUTH", "uint32"),
        (4, "HANDSHAKE_A_DONE_TAG", "asciiz"),
    )
    multi_attrs = frozenset({"HANDSHAKE_A_DONE_REMOTE_AUTH", "HANDSHAKE_A_DONE_TAG"})


def build_accept(handler_class: int = HANDSHAKE_HANDLER_CLASS_TLSHD) -> accept_msg:
    """The ACCEPT request: exactly one attribute, HANDLER_CLASS (§1.5)."""
    msg = accept_msg()
    msg["cmd"] = HANDSHAKE_CMD_ACCEPT
    msg["version"] = FAMILY_VERSION
    msg["attrs"] = [["HANDSHAKE_A_ACCEPT_HANDLER_CLASS", handler_class]]
    return msg


def ready_handler_class(msg: Any) -> int | None:
    """HANDLER_CLASS of a READY (or any accept-set message), None if absent (§1.4)."""
    handler_class: int | None = msg.get_attr("HANDSHAKE_A_ACCEPT_HANDLER_CLASS")
    return handler_class


def parse_accept(msg: Any) -> dict[str, Any]:
    """The fields of an ACCEPT reply (§1.5); absent attributes get the spec's defaults.

    sockfd is None if SOCKFD is missing; timeout is 0 when absent (the caller's default);
    every PEER_IDENTITY and CERTIFICATE occurrence is kept, in order.
    """
    certificates = []
    for nest in msg.get_attrs("HANDSHAKE_A_ACCEPT_CERTIFICATE"):
        certificates.append(
            (nest.get_attr("HANDSHAKE_A_X509_CERT") or 0, nest.get_attr("HANDSHAKE_A_X509_PRIVKEY") or 0)
        )
    return {
        "sockfd": msg.get_attr("HANDSHAKE_A_ACCEPT_SOCKFD"),
        "message_type": msg.get_attr("HANDSHAKE_A_ACCEPT_MESSAGE_TYPE") or HANDSHAKE_MSG_TYPE_UNSPEC,
        "timeout": msg.get_attr("HANDSHAKE_A_ACCEPT_TIMEOUT") or 0,
        "auth_mode": msg.get_attr("HANDSHAKE_A_ACCEPT_AUTH_MODE") or HANDSHAKE_AUTH_UNSPEC,
        "peer_identities": list(msg.get_attrs("HANDSHAKE_A_ACCEPT_PEER_IDENTITY")),
        "certificates": certificates,
        "peername": msg.get_attr("HANDSHAKE_A_ACCEPT_PEERNAME"),
        "keyring": msg.get_attr("HANDSHAKE_A_ACCEPT_KEYRING") or 0,
    }


def build_done(
    status: int, sockfd: int, remote_auth: Iterable[int] = (), tags: Iterable[str] = ()
) -> done_msg:
    """A DONE request (§1.7): STATUS and SOCKFD always; REMOTE_AUTH and TAG only when status
    is 0 (they are dropped on failure). Only pass `tags` to kernels that support TAG (§1.8)."""
    if not 0 <= status <= MAX_ERRNO:
        raise ValueError(f"DONE status must be 0 or a positive errno <= {MAX_ERRNO}, not {status}")
    msg = done_msg()
    msg["cmd"] = HANDSHAKE_CMD_DONE
    msg["version"] = FAMILY_VERSION
    attrs: list[list[Any]] = [["HANDSHAKE_A_DONE_STATUS", status], ["HANDSHAKE_A_DONE_SOCKFD", sockfd]]
    if status == 0:
        attrs += [["HANDSHAKE_A_DONE_REMOTE_AUTH", int(s)] for s in remote_auth]
        attrs += [["HANDSHAKE_A_DONE_TAG", str(t)] for t in tags]
    msg["attrs"] = attrs
    return msg


_NLMSGHDR_SIZE = 16
_GENLMSGHDR = struct.Struct("=BBH")
_NLA_HDR = struct.Struct("=HH")
_NLA_F_NESTED = 0x8000
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER, as pyroute2 reads it
_INTEGERS = {"uint32": struct.Struct("=I"), "int32": struct.Struct("=i")}


class _Codec:
    """One message class's attribute map, for `encode` and `decode`: number -> (name, kind,
    nested class) and name -> (number, kind)."""

    def __init__(self, cls: MessageClass) -> None:
        self.by_number: dict[int, tuple[str, str, MessageClass | None]] = {}
        self.by_name: dict[str, tuple[int, str, MessageClass | None]] = {}
        for number, name, kind in cls.nla_map:
            nested = None
            if kind.endswith("|nested"):
                nested = getattr(cls, kind.split("|", 1)[0])
                kind = "nested"
            elif kind not in _INTEGERS and kind != "asciiz":
                raise TypeError(f"{cls.__name__}.{name}: no fast codec for {kind!r}")
            self.by_number[number] = (name, kind, nested)
            self.by_name[name] = (number, kind, nested)


_CODECS: dict[MessageClass, _Codec] = {}


def _codec(cls: MessageClass) -> _Codec:
    codec = _CODECS.get(cls)
    if codec is None:
        codec = _CODECS[cls] = _Codec(cls)
    return codec


def _encode_attrs(cls: MessageClass, attrs: Iterable[tuple[str, Any]], out: bytearray) -> None:
    codec = _codec(cls)
    for name, value in attrs:
        number, kind, nested = codec.by_name[name]
        payload: bytes | bytearray
        if kind == "asciiz":
            payload = (value.encode() if isinstance(value, str) else bytes(value)) + b"\0"
        elif nested is not None:
            payload = inner = bytearray()
            _encode_attrs(nested, value["attrs"], inner)
            number |= _NLA_F_NESTED
        else:
            payload = _INTEGERS[kind].pack(value)
        out += _NLA_HDR.pack(4 + len(payload), number)
        out += payload
        out += bytes(-len(payload) % 4)


def encode(cls: MessageClass, cmd: int, attrs: Iterable[tuple[str, Any]]) -> bytearray:
    """The bytes `cls()` with these cmd and attrs encodes to (version FAMILY_VERSION); the
    netlink header's length is set, its type, flags, seq and pid are left 0 to the sender."""
    out = bytearray(_NLMSGHDR_SIZE)
    out += _GENLMSGHDR.pack(cmd, FAMILY_VERSION, 0)
    _encode_attrs(cls, attrs, out)
    struct.pack_into("=I", out, 0, len(out))
    return out


class Decoded:
    """A message read by `decode`: the attributes as (name, value) in order; get_attr (the
    first) and get_attrs (all) as on a decoded pyroute2 message."""

    __slots__ = ("cmd", "attrs")

    def __init__(self, cmd: int, attrs: list[tuple[str, Any]]) -> None:
        self.cmd = cmd
        self.attrs = attrs

    def get_attr(self, name: str, default: Any = None) -> Any:
        for key, value in self.attrs:
            if key == name:
                return value
        return default

    def get_attrs(self, name: str) -> list[Any]:
        return [value for key, value in self.attrs if key == name]


def _decode_attrs(cls: MessageClass, data: bytes, offset: int, end: int) -> list[tuple[str, Any]]:
    by_number = _codec(cls).by_number
    attrs = []
    while offset <= end - 4:
        length, number = _NLA_HDR.unpack_from(data, offset)
        length = min(max(length, 4), end - offset)
        known = by_number.get(number & _NLA_TYPE_MASK)
        if known is not None:
            name, kind, nested = known
            start, stop = offset + 4, offset + length
            if kind == "asciiz":
                raw = bytes(data[start:stop]).strip(b"\0")
                try:
                    value: Any = raw.decode("utf-8")
                except UnicodeDecodeError:
                    value = raw
                attrs.append((name, value))
            elif nested is not None:
                attrs.append((name, Decoded(0, _decode_attrs(nested, data, start, stop))))
            elif stop - start >= 4:
                attrs.append((name, _INTEGERS[kind].unpack_from(data, start)[0]))
        offset += (length + 3) & ~3
    return attrs


def decode(cls: MessageClass, message: bytes) -> Decoded:
    """One generic netlink message of class `cls` (its netlink header first), attributes
    read by the class's map; unknown attributes are skipped. A message too short for its
    headers raises NetlinkReplyError (EPROTO), as a failed request would."""
    _check_size(message, _NLMSGHDR_SIZE + _GENLMSGHDR.size)
    length = min(struct.unpack_from("=I", message, 0)[0], len(message))
    cmd = message[_NLMSGHDR_SIZE]
    return Decoded(cmd, _decode_attrs(cls, message, _NLMSGHDR_SIZE + _GENLMSGHDR.size, length))


_ACCEPT_REQUESTS: dict[int, bytes] = {}


def accept_request(handler_class: int = HANDSHAKE_HANDLER_CLASS_TLSHD) -> bytes:
    """build_accept(handler_class)'s bytes (the header's length set, the rest left to the
    sender), encoded once per handler class."""
    data = _ACCEPT_REQUESTS.get(handler_class)
    if data is None:
        msg = build_accept(handler_class)
        data = _ACCEPT_REQUESTS[handler_class] = bytes(
            encode(accept_msg, msg["cmd"], [(name, value) for name, value in msg["attrs"]]))
    return data


def done_request(status: int, sockfd: int, remote_auth: Iterable[int] = (),
                 tags: Iterable[str] = ()) -> bytearray:
    """build_done(...)'s bytes, by `encode` (the same checks and attribute choice)."""
    if not 0 <= status <= MAX_ERRNO:
        raise ValueError(f"DONE status must be 0 or a positive errno <= {MAX_ERRNO}, not {status}")
    attrs: list[tuple[str, Any]] = [("HANDSHAKE_A_DONE_STATUS", status), ("HANDSHAKE_A_DONE_SOCKFD", sockfd)]
    if status == 0:
        attrs += [("HANDSHAKE_A_DONE_REMOTE_AUTH", int(s)) for s in remote_auth]
        attrs += [("HANDSHAKE_A_DONE_TAG", str(t)) for t in tags]
    return encode(done_msg, HANDSHAKE_CMD_DONE, attrs)


@dataclass(frozen=True)
class KernelCapabilities:
    """Which optional DONE attributes the running kernel accepts (§1.8)."""

    remote_peerids: bool = True
    session_tags: bool = False

    def describe(self) -> str:
        def word(ok: bool) -> str:
            return "supported" if ok else "not available"

        return f"session_tags={word(self.session_tags)} remote_peerids={word(self.remote_peerids)}"


def probe_accepted(error: int | None) -> bool:
    """How a probe DONE (SOCKFD -1) tells whether its one optional attribute is known (§1.8).

    The kernel validates attributes against its policy before it looks up the fd: EBADF (or
    no error) means the attribute passed the policy; EINVAL means the policy rejected it.
    tlshd only checks that the send worked, so it reports "supported" on every kernel.
    """
    return error is None or error == errno.EBADF


class HandshakeFamily:
    """A pyroute2 generic netlink socket bound to the `handshake` family: how the family and
    its group are resolved by name (the daemon's preflight, resolve_family()). Raises
    FamilyMissing if the family (or, with `join=True`, its "tlshd" group) is missing.
    """

    def __init__(self, *, join: bool = False) -> None:
        self.sock = GenericNetlinkSocket()
        try:
            try:
                self.sock.bind(FAMILY_NAME, accept_msg)
            except NetlinkError as exc:
                if exc.code in (errno.ENOENT, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise FamilyMissing(str(exc)) from exc
                raise
            if join:
                if MCAST_GROUP not in self.sock.mcast_groups:
                    raise FamilyMissing(f"no multicast group {MCAST_GROUP!r}")
                self.sock.add_membership(MCAST_GROUP)
        except BaseException:
            self.sock.close()
            raise

    @property
    def family_id(self) -> int:
        family: int = self.sock.prid
        return family

    def fileno(self) -> int:
        fd: int = self.sock.fileno()
        return fd

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> HandshakeFamily:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


NETLINK_GENERIC = 16
REQUEST_TIMEOUT = 10.0
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
_NLMSGHDR = struct.Struct("=IHHII")
_ERROR_CODE = struct.Struct("=i")  # nlmsgerr.error, after the header


class NetlinkReplyError(OSError):
    """The kernel answered a request with a negative errno (NLMSG_ERROR)."""


def split_messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, seq, whole message) for each netlink message of one datagram."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, msg_type, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        yield msg_type, seq, data[offset:offset + length]
        offset += (length + 3) & ~3


def error_code(message: bytes) -> int:
    """The positive errno of an NLMSG_ERROR message (0 for an ACK)."""
    _check_size(message, _NLMSGHDR.size + 4)
    (code,) = _ERROR_CODE.unpack_from(message, _NLMSGHDR.size)
    return -int(code)


def _check_size(message: bytes, size: int) -> None:
    # The kernel never sends these; if one came, the request fails (callers handle OSError)
    # instead of a struct.error or IndexError ending a worker thread (found by fuzz/).
    if len(message) < size:
        raise NetlinkReplyError(errno.EPROTO, f"netlink message of {len(message)} bytes, under {size}")


def resolve_family() -> tuple[int, int]:
    """(family id, "tlshd" group id), or FamilyMissing."""
    with HandshakeFamily() as fam:
        groups = fam.sock.mcast_groups
        if MCAST_GROUP not in groups:
            raise FamilyMissing(f"no multicast group {MCAST_GROUP!r}")
        return fam.family_id, groups[MCAST_GROUP]


def bound_waits(sock: socket.socket, seconds: float) -> None:
    """Blocking sends and receives on `sock` give up after `seconds` (EAGAIN), by the kernel's
    SO_RCVTIMEO/SO_SNDTIMEO rather than a Python timeout, which would poll() before every
    call."""
    whole = int(seconds)
    limit = struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)


class HandshakeChannel:
    """A generic netlink socket for the `handshake` family whose id is already known.

    With `group`, it joins that multicast group and only reads READY notifications;
    without, it sends ACCEPT and DONE (with NLM_F_ACK) and reads their replies.
    """

    def __init__(self, family_id: int, group: int | None = None) -> None:
        self.family_id = family_id
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_GENERIC)
        try:
            self.sock.bind((0, 0))
            if group is not None:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
            else:
                bound_waits(self.sock, REQUEST_TIMEOUT)  # the kernel answers at once
        except BaseException:
            self.sock.close()
            raise
        self._seq = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_ready(self) -> list[int]:
        """Read one datagram of notifications; the handler classes of READYs carrying one."""
        classes = []
        for msg_type, _seq, message in split_messages(self.sock.recv(65536)):
            if msg_type == self.family_id:
                hc = ready_handler_class(decode(ready_msg, message))
                if hc is not None:
                    classes.append(hc)
        return classes

    def _request(self, msg: bytes | bytearray) -> list[bytes]:
        """Send `msg` (an encoded request; its header is filled in here) with NLM_F_ACK;
        the family's replies before the ACK. A negative answer raises NetlinkReplyError
        with its errno."""
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        data = bytearray(msg)
        _NLMSGHDR.pack_into(data, 0, len(data), self.family_id, NLM_F_REQUEST | NLM_F_ACK, self._seq, 0)
        try:
            self.sock.send(data)
        except BlockingIOError:
            raise TimeoutError(errno.ETIMEDOUT,
                               f"netlink: request not taken within {REQUEST_TIMEOUT:.0f} s") from None
        replies: list[bytes] = []
        while True:
            try:
                datagram = self.sock.recv(65536)
            except BlockingIOError:
                raise TimeoutError(errno.ETIMEDOUT,
                                   f"netlink: no answer within {REQUEST_TIMEOUT:.0f} s") from None
            for msg_type, seq, message in split_messages(datagram):
                if seq != self._seq:
                    continue                    # a late answer to an abandoned request
                if msg_type == NLMSG_ERROR:
                    code = error_code(message)
                    if code:
                        raise NetlinkReplyError(code, os.strerror(code))
                    return replies
                if msg_type == self.family_id:
                    replies.append(message)

    def accept(self, handler_class: int = HANDSHAKE_HANDLER_CLASS_TLSHD) -> dict[str, Any]:
        """ACCEPT; NetlinkReplyError(EAGAIN) when another agent took the request."""
        for message in self._request(accept_request(handler_class)):
            reply = decode(accept_msg, message)
            if reply.get_attr("HANDSHAKE_A_ACCEPT_SOCKFD") is not None:
                return parse_accept(reply)
        raise NetlinkReplyError(errno.EIO, "ACCEPT reply without SOCKFD")

    def done(self, status: int, sockfd: int, remote_auth: Iterable[int] = (),
             tags: Iterable[str] = ()) -> None:
        """DONE, waiting for the kernel's ACK; a rejection raises NetlinkReplyError."""
        self._request(done_request(status, sockfd, remote_auth, tags))

    def probe(self) -> KernelCapabilities:
        """The two probe DONEs tlshd sends, and the kernel's verdicts (§1.8)."""
        verdicts = []
        for extra in ({"tags": ["__probe__"]}, {"remote_auth": [0]}):
            try:
                self.done(0, -1, **extra)
                verdicts.append(probe_accepted(None))
            except NetlinkReplyError as exc:
                verdicts.append(probe_accepted(exc.errno))
        return KernelCapabilities(session_tags=verdicts[0], remote_peerids=verdicts[1])

    def close(self) -> None:
        self.sock.close()


class ThreadChannels:
    """One request channel per thread, made on first use and kept for the thread's life."""

    def __init__(self, family_id: int) -> None:
        self.family_id = family_id
        self._local = threading.local()

    def get(self) -> HandshakeChannel:
        try:
            channel: HandshakeChannel = self._local.channel
        except AttributeError:
            channel = self._local.channel = HandshakeChannel(self.family_id)
        return channel
