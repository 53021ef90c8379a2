"""The `handshake` generic netlink family (spec tlshd-behaviour §1, §9.2) on pyroute2.

The family is described in netlink/handshake.yaml; the message classes below mirror it
(tests/daemon/test_netlink.py checks that they agree attribute by attribute).

    ready_msg    READY (1), kernel -> agent, multicast on group "tlshd"; accept attribute set
    accept_msg   ACCEPT (2) request (HANDLER_CLASS) and its unicast reply; accept attribute set
    done_msg     DONE (3) request; done attribute set

`parse_accept(msg)` turns an ACCEPT reply into a dict, `build_done(...)` makes a DONE message,
and `HandshakeFamily` resolves the family by name through pyroute2's GenericNetlinkSocket
(optionally joining "tlshd"), raising `FamilyMissing` if the kernel does not have it.

Differences from tlshd: repeated PEER_IDENTITY and CERTIFICATE attributes are all kept (tlshd
keeps only the last one); ACCEPT and DONE are sent with NLM_F_ACK so kernel errors (EAGAIN on
ACCEPT, a rejected DONE) are seen instead of lost (§1.7, §9.2.5).
"""
from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, genlmsg, nla
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


class x509_attrs(nla):
    """The nested x509 attribute set (inside ACCEPT CERTIFICATE)."""

    nla_map = (
        (1, "HANDSHAKE_A_X509_CERT", "int32"),
        (2, "HANDSHAKE_A_X509_PRIVKEY", "int32"),
    )


class _accept_set(genlmsg):
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


class done_msg(genlmsg):
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
    return msg.get_attr("HANDSHAKE_A_ACCEPT_HANDLER_CLASS")


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
    """A pyroute2 generic netlink socket bound to the `handshake` family.

    Use one instance with `join=True` as the READY listener, and a fresh instance per ACCEPT
    and per DONE, as tlshd does (§1.11). Raises FamilyMissing if the family cannot be resolved.
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
        return self.sock.prid

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_ready(self) -> list[int]:
        """Read pending multicast messages; the handler classes of those that carry one."""
        classes = []
        for msg in self.sock.get():
            hc = ready_handler_class(msg) if hasattr(msg, "get_attr") else None
            if hc is not None:
                classes.append(hc)
        return classes

    def accept(self, handler_class: int = HANDSHAKE_HANDLER_CLASS_TLSHD) -> dict[str, Any]:
        """Send ACCEPT and parse the reply. NetlinkError(EAGAIN) means nothing was pending."""
        for reply in self.sock.nlm_request(
            build_accept(handler_class), msg_type=self.family_id, msg_flags=NLM_F_REQUEST | NLM_F_ACK
        ):
            if reply.get_attr("HANDSHAKE_A_ACCEPT_SOCKFD") is not None:
                return parse_accept(reply)
        raise NetlinkError(errno.EIO, "ACCEPT reply without SOCKFD")

    def done(self, status: int, sockfd: int, remote_auth: Iterable[int] = (), tags: Iterable[str] = ()) -> None:
        """Send DONE and wait for the kernel's ack; a rejection raises NetlinkError."""
        for _ in self.sock.nlm_request(
            build_done(status, sockfd, remote_auth, tags),
            msg_type=self.family_id,
            msg_flags=NLM_F_REQUEST | NLM_F_ACK,
        ):
            pass

    def probe(self) -> KernelCapabilities:
        """Send the two probe DONEs tlshd sends, and read the kernel's verdicts (§1.8)."""
        verdicts = []
        for extra in ({"tags": ["__probe__"]}, {"remote_auth": [0]}):
            try:
                self.done(0, -1, **extra)
                verdicts.append(probe_accepted(None))
            except NetlinkError as exc:
                verdicts.append(probe_accepted(exc.code))
        return KernelCapabilities(session_tags=verdicts[0], remote_peerids=verdicts[1])

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> HandshakeFamily:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
