"""Target netlink_attrs: what the daemon reads from the kernel's `handshake` generic netlink
family (spec tlshd-behaviour §1), quichsd/daemon/netlink.py: a received datagram split
into netlink messages, READY notifications, ACCEPT replies read by the accept attribute set
(nested x509 attributes included) into parse_accept's fields, and NLMSG_ERROR codes.

Input: one datagram as recv() would return it. The first 16 bits of the second message
header are not special: every message is tried as READY, ACCEPT and NLMSG_ERROR.

A bug is any exception but NetlinkReplyError(EPROTO) for a message too short for its
headers: the kernel is trusted to send well-formed messages, but a short or odd one must
fail that one request (the worker handles OSError), not take a worker thread down with a
traceback; also a decoded attribute of the wrong type (an integer attribute that is not an
int, a PEERNAME that is neither str nor bytes).
"""
from __future__ import annotations

import errno

from quichsd.daemon.netlink import (
    NetlinkReplyError,
    accept_msg,
    decode,
    error_code,
    parse_accept,
    ready_handler_class,
    ready_msg,
    split_messages,
)

_INT_FIELDS = ("message_type", "timeout", "auth_mode", "keyring")


def one_input(data: bytes) -> None:
    for _msg_type, _seq, message in split_messages(data):
        try:
            _message(message)
        except NetlinkReplyError as err:
            assert err.errno == errno.EPROTO and len(message) < 20, err


def _message(message: bytes) -> None:
    assert isinstance(error_code(message), int)
    hc = ready_handler_class(decode(ready_msg, message))
    assert hc is None or isinstance(hc, int), hc
    fields = parse_accept(decode(accept_msg, message))
    assert fields["sockfd"] is None or isinstance(fields["sockfd"], int), fields
    assert all(isinstance(fields[k], int) for k in _INT_FIELDS), fields
    assert all(isinstance(p, int) for p in fields["peer_identities"]), fields
    assert all(isinstance(c, int) and isinstance(k, int) for c, k in fields["certificates"]), fields
    assert fields["peername"] is None or isinstance(fields["peername"], (str, bytes)), fields
