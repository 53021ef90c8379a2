"""netlink/handshake.yaml against quichsd.daemon.netlink (spec tlshd-behaviour §1, §9.2):
the pyroute2 classes must carry exactly the YAML's attributes, and every message must survive
an encode/decode round trip. The YAML is read with the stdlib json module (see netlink/README.md)."""
from __future__ import annotations

import errno
import json
import struct
import threading
from pathlib import Path

import pytest

from quichsd.daemon import netlink as nl

SPEC = json.loads((Path(__file__).resolve().parents[2] / "netlink" / "handshake.yaml").read_text())
SETS = {s["name"]: s for s in SPEC["attribute-sets"]}
OPS = {o["name"]: o for o in SPEC["operations"]["list"]}

# attribute set -> the pyroute2 classes that must implement it
CLASSES = {
    "x509": [nl.x509_attrs],
    "accept": [nl.ready_msg, nl.accept_msg],
    "done": [nl.done_msg],
}
NEST_CLASSES = {"x509": "x509_attrs"}
TYPES = {"u32": "uint32", "s32": "int32", "string": "asciiz"}
FAKE_FAMILY_ID = 0x1F


def c_name(aset: dict, attr: dict) -> str:
    return (aset["name-prefix"] + attr["name"]).upper().replace("-", "_")


def expected_map(aset: dict) -> set[tuple[int, str, str]]:
    out = set()
    for i, attr in enumerate(aset["attributes"]):
        if attr["type"] == "nest":
            ptype = NEST_CLASSES[attr["nested-attributes"]] + "|nested"
        else:
            ptype = TYPES[attr["type"]]
        out.add((attr.get("value", i + 1), c_name(aset, attr), ptype))
    return out


def check_class(cls, aset: dict) -> None:
    got = {tuple(x) for x in cls.nla_map}
    assert len(got) == len(cls.nla_map)
    assert got == expected_map(aset), f"{cls.__name__} differs from attribute set {aset['name']}"
    multi = {c_name(aset, a) for a in aset["attributes"] if a.get("multi-attr")}
    assert set(getattr(cls, "multi_attrs", ())) == multi


def test_yaml_header():
    assert SPEC["name"] == nl.FAMILY_NAME == "handshake"
    assert SPEC["protocol"] == "genetlink"
    assert [g["name"] for g in SPEC["mcast-groups"]["list"]] == ["none", "tlshd"]
    # the multicast group index equals the handler class (§1.1)
    groups = [g["name"] for g in SPEC["mcast-groups"]["list"]]
    assert groups.index(nl.MCAST_GROUP) == nl.HANDSHAKE_HANDLER_CLASS_TLSHD


def test_enums():
    defs = {d["name"]: d for d in SPEC["definitions"]}
    values = {name: {e: i + d.get("value-start", 0) for i, e in enumerate(d["entries"])} for name,
              d in defs.items()}
    assert values["handler-class"] == {"none": 0, "tlshd": 1, "max": 2}
    assert values["msg-type"] == {
        "unspec": nl.HANDSHAKE_MSG_TYPE_UNSPEC,
        "clienthello": nl.HANDSHAKE_MSG_TYPE_CLIENTHELLO,
        "serverhello": nl.HANDSHAKE_MSG_TYPE_SERVERHELLO,
    }
    assert values["auth"] == {
        "unspec": nl.HANDSHAKE_AUTH_UNSPEC,
        "unauth": nl.HANDSHAKE_AUTH_UNAUTH,
        "psk": nl.HANDSHAKE_AUTH_PSK,
        "x509": nl.HANDSHAKE_AUTH_X509,
    }
    for aset in SETS.values():
        for attr in aset["attributes"]:
            if "enum" in attr:
                assert attr["enum"] in defs


@pytest.mark.parametrize("set_name", sorted(CLASSES))
def test_attribute_set_matches_classes(set_name):
    assert set(SETS) == set(CLASSES)
    for cls in CLASSES[set_name]:
        check_class(cls, SETS[set_name])


def test_mismatch_is_detected():
    class wrong(nl.done_msg):
        nla_map = tuple(
            (n, name, "uint32" if name.endswith("SOCKFD") else t) for n, name, t in nl.done_msg.nla_map
        )

    class renumbered(nl.done_msg):
        nla_map = tuple((n + 1, name, t) for n, name, t in nl.done_msg.nla_map)

    for cls in (wrong, renumbered):
        with pytest.raises(AssertionError):
            check_class(cls, SETS["done"])


def test_operations():
    assert [o["name"] for o in SPEC["operations"]["list"]] == ["ready", "accept", "done"]
    assert OPS["ready"]["value"] == nl.HANDSHAKE_CMD_READY == 1
    assert OPS["accept"]["value"] == nl.HANDSHAKE_CMD_ACCEPT == 2
    assert OPS["done"]["value"] == nl.HANDSHAKE_CMD_DONE == 3
    assert OPS["ready"]["mcgrp"] == "tlshd"
    assert OPS["ready"]["event"]["attributes"] == ["handler-class"]
    assert OPS["accept"]["do"]["request"]["attributes"] == ["handler-class"]
    for op in OPS.values():
        names = {a["name"] for a in SETS[op["attribute-set"]]["attributes"]}
        parts = [op.get("event", {})] + [op.get("do", {}).get(k, {}) for k in ("request", "reply")]
        for part in parts:
            assert set(part.get("attributes", ())) <= names, op["name"]
    reply = set(OPS["accept"]["do"]["reply"]["attributes"])
    assert reply == {a["name"] for a in SETS["accept"]["attributes"]} - {"handler-class"}
    assert OPS["done"]["do"]["request"]["attributes"] == [a["name"] for a in SETS["done"]["attributes"]]


def pairs(msg) -> list[tuple]:
    return [(a[0], a[1]) for a in msg["attrs"]]


def round_trip(msg, cls):
    msg["header"]["type"] = FAKE_FAMILY_ID
    msg.encode()
    data = bytes(msg.data)
    out = cls(data)
    out.decode()
    assert out["header"]["type"] == FAKE_FAMILY_ID
    assert out["header"]["length"] == len(data)
    return out, data


def test_ready_round_trip():
    msg = nl.ready_msg()
    msg["cmd"] = nl.HANDSHAKE_CMD_READY
    msg["version"] = 1
    msg["attrs"] = [["HANDSHAKE_A_ACCEPT_HANDLER_CLASS", 1]]
    out, _ = round_trip(msg, nl.ready_msg)
    assert out["cmd"] == 1
    assert nl.ready_handler_class(out) == 1


def test_accept_request_round_trip():
    out, data = round_trip(nl.build_accept(), nl.accept_msg)
    assert out["cmd"] == nl.HANDSHAKE_CMD_ACCEPT
    assert pairs(out) == [("HANDSHAKE_A_ACCEPT_HANDLER_CLASS", 1)]
    # nlmsghdr + genlmsghdr + one u32 TLV (len 8, type 2)
    assert data[20:] == struct.pack("=HHI", 8, 2, 1)


def test_accept_reply_round_trip():
    msg = nl.accept_msg()
    msg["cmd"] = nl.HANDSHAKE_CMD_ACCEPT
    msg["version"] = 1
    msg["attrs"] = [
        ["HANDSHAKE_A_ACCEPT_SOCKFD", 11],
        ["HANDSHAKE_A_ACCEPT_MESSAGE_TYPE", nl.HANDSHAKE_MSG_TYPE_SERVERHELLO],
        ["HANDSHAKE_A_ACCEPT_TIMEOUT", 20000],
        ["HANDSHAKE_A_ACCEPT_AUTH_MODE", nl.HANDSHAKE_AUTH_X509],
        ["HANDSHAKE_A_ACCEPT_PEER_IDENTITY", 0x11111111],
        ["HANDSHAKE_A_ACCEPT_PEER_IDENTITY", 0x22222222],
        ["HANDSHAKE_A_ACCEPT_PEER_IDENTITY", 0x33333333],
        ["HANDSHAKE_A_ACCEPT_CERTIFICATE", {"attrs": [["HANDSHAKE_A_X509_CERT", 101],
                                                      ["HANDSHAKE_A_X509_PRIVKEY", 102]]}],
        ["HANDSHAKE_A_ACCEPT_CERTIFICATE", {"attrs": [["HANDSHAKE_A_X509_CERT", 201],
                                                      ["HANDSHAKE_A_X509_PRIVKEY", -1]]}],
        ["HANDSHAKE_A_ACCEPT_PEERNAME", "nfs.example.org"],
        ["HANDSHAKE_A_ACCEPT_KEYRING", 0x0ABCDEF0],
    ]
    out, data = round_trip(msg, nl.accept_msg)
    assert nl.parse_accept(out) == {
        "sockfd": 11,
        "message_type": 2,
        "timeout": 20000,
        "auth_mode": 3,
        "peer_identities": [0x11111111, 0x22222222, 0x33333333],
        "certificates": [(101, 102), (201, -1)],
        "peername": "nfs.example.org",
        "keyring": 0x0ABCDEF0,
    }
    # the CERTIFICATE nest goes out with NLA_F_NESTED (as the kernel sends it)
    assert struct.pack("=H", 7 | 0x8000) in data


def test_accept_reply_defaults():
    msg = nl.accept_msg()
    msg["cmd"] = nl.HANDSHAKE_CMD_ACCEPT
    msg["attrs"] = [["HANDSHAKE_A_ACCEPT_SOCKFD", 4]]
    out, _ = round_trip(msg, nl.accept_msg)
    assert nl.parse_accept(out) == {
        "sockfd": 4,
        "message_type": 0,
        "timeout": 0,
        "auth_mode": 0,
        "peer_identities": [],
        "certificates": [],
        "peername": None,
        "keyring": 0,
    }


def test_accept_reply_kernel_bytes():
    """Bytes laid out by hand per §1.11, as the kernel would send them."""

    def tlv(t, payload):
        pad = b"\0" * (-len(payload) % 4)
        return struct.pack("=HH", 4 + len(payload), t) + payload + pad

    nest = tlv(1, struct.pack("=i", 5)) + tlv(2, struct.pack("=i", 6))
    body = (
        tlv(1, struct.pack("=i", 9))
        + tlv(3, struct.pack("=I", 1))
        + tlv(5, struct.pack("=I", 2))
        + tlv(6, struct.pack("=I", 77))
        + tlv(7 | 0x8000, nest)
        + tlv(8, b"srv\0")
    )
    genl = struct.pack("=BBH", 2, 1, 0)
    data = struct.pack("=IHHII", 16 + 4 + len(body), FAKE_FAMILY_ID, 0, 1, 0) + genl + body
    msg = nl.accept_msg(data)
    msg.decode()
    got = nl.parse_accept(msg)
    assert got["sockfd"] == 9 and got["message_type"] == 1 and got["auth_mode"] == 2
    assert got["peer_identities"] == [77]
    assert got["certificates"] == [(5, 6)]
    assert got["peername"] == "srv"


def test_done_round_trip():
    out, _ = round_trip(nl.build_done(0, 12, [0x1234, 0x5678], tags=["gold", "nfs"]), nl.done_msg)
    assert out["cmd"] == nl.HANDSHAKE_CMD_DONE
    assert pairs(out) == [
        ("HANDSHAKE_A_DONE_STATUS", 0),
        ("HANDSHAKE_A_DONE_SOCKFD", 12),
        ("HANDSHAKE_A_DONE_REMOTE_AUTH", 0x1234),
        ("HANDSHAKE_A_DONE_REMOTE_AUTH", 0x5678),
        ("HANDSHAKE_A_DONE_TAG", "gold"),
        ("HANDSHAKE_A_DONE_TAG", "nfs"),
    ]


def test_done_failure_and_probe():
    out, _ = round_trip(nl.build_done(13, 12, [0x1234]), nl.done_msg)
    assert pairs(out) == [("HANDSHAKE_A_DONE_STATUS", 13), ("HANDSHAKE_A_DONE_SOCKFD", 12)]
    out, _ = round_trip(nl.build_done(0, -1, [0]), nl.done_msg)
    assert out.get_attr("HANDSHAKE_A_DONE_SOCKFD") == -1
    assert out.get_attrs("HANDSHAKE_A_DONE_REMOTE_AUTH") == [0]
    for bad in (-1, 4096):
        with pytest.raises(ValueError):
            nl.build_done(bad, 3)


def test_family_missing_on_this_machine():
    with pytest.raises(nl.FamilyMissing, match=r"CONFIG_NET_HANDSHAKE off\?"):
        nl.HandshakeFamily(join=True)
    with pytest.raises(nl.FamilyMissing):
        nl.HandshakeFamily()


def test_probe_verdicts_read_the_kernel_error():
    """§1.8: EBADF means the attribute passed the policy (fd -1 then failed); EINVAL means
    the policy rejected it. tlshd would call both "supported"."""
    assert nl.probe_accepted(errno.EBADF) and nl.probe_accepted(None)
    assert not nl.probe_accepted(errno.EINVAL)
    caps = nl.KernelCapabilities(remote_peerids=True, session_tags=False)
    assert caps.describe() == "session_tags=not available remote_peerids=supported"
    # The probe DONEs themselves: status 0, fd -1, one optional attribute each.
    tag_probe, _ = round_trip(nl.build_done(0, -1, tags=["__probe__"]), nl.done_msg)
    assert tag_probe.get_attrs("HANDSHAKE_A_DONE_TAG") == ["__probe__"]
    assert tag_probe.get_attrs("HANDSHAKE_A_DONE_REMOTE_AUTH") == []


def test_split_messages_and_error_codes():
    """Two messages in one datagram (a reply and its ACK), padding respected."""
    reply, _ = round_trip(nl.build_done(0, 7), nl.done_msg)
    first = reply.data + b"\0" * (-len(reply.data) % 4)
    ack = struct.pack("=IHHII", 36, 2, 0, 5, 0) + struct.pack("=i", 0) + bytes(16)
    nack = struct.pack("=IHHII", 36, 2, 0, 6, 0) + struct.pack("=i", -errno.EAGAIN) + bytes(16)
    parts = list(nl.split_messages(first + ack + nack))
    assert [(t, seq) for t, seq, _ in parts][1:] == [(2, 5), (2, 6)]
    assert parts[0][2] == reply.data
    assert nl.error_code(parts[1][2]) == 0 and nl.error_code(parts[2][2]) == errno.EAGAIN
    assert list(nl.split_messages(b"\0" * 8)) == []


def test_channel_reports_the_kernels_refusal_on_real_netlink():
    """A HandshakeChannel speaks real generic netlink: aimed at the controller family (id 0x10;
    this machine has no `handshake` family), its requests come back as NLMSG_ERROR, raised
    with the kernel's errno, and the channel stays usable."""
    channel = nl.HandshakeChannel(0x10)
    try:
        for _ in range(2):
            with pytest.raises(nl.NetlinkReplyError) as info:
                channel.done(0, -1)        # cmd 3 on nlctrl is GETFAMILY: no name given
            assert info.value.errno in (errno.EINVAL, errno.ENOENT, errno.EOPNOTSUPP)
    finally:
        channel.close()


def test_thread_channels_are_per_thread():
    channels = nl.ThreadChannels(0x10)
    mine = channels.get()
    assert channels.get() is mine
    other = []
    t = threading.Thread(target=lambda: other.append(channels.get()))
    t.start()
    t.join()
    assert other[0] is not mine and other[0].family_id == 0x10


# ---- the channel's own codec: the same bytes and values as pyroute2's -------------------

def pyroute2_bytes(msg) -> bytes:
    msg.encode()
    return bytes(msg.data)


def pyroute2_decoded(cls, data: bytes):
    msg = cls(data)
    msg.decode()
    return msg


@pytest.mark.parametrize("handler_class", [0, 1, 2, 0xFFFFFFFF])
def test_accept_request_bytes_are_pyroute2s(handler_class):
    assert nl.accept_request(handler_class) == pyroute2_bytes(nl.build_accept(handler_class))
    assert nl.accept_request(handler_class) is nl.accept_request(handler_class)  # encoded once


@pytest.mark.parametrize("args", [
    (0, 12, [0x1234, 0x5678], ["gold", "nfs"]),
    (0, 12, [], []),
    (13, 12, [0x1234], ["dropped on failure"]),
    (0, -1, [], ["__probe__"]),
    (0, -1, [0], []),
    (4095, 2**31 - 1, [], []),
    (0, 5, [0xFFFFFFFF], ["é", "a" * 7]),
])
def test_done_request_bytes_are_pyroute2s(args):
    assert bytes(nl.done_request(*args)) == pyroute2_bytes(nl.build_done(*args))


def test_done_request_checks_the_status_as_build_done():
    for bad in (-1, 4096):
        with pytest.raises(ValueError):
            nl.done_request(bad, 3)


FULL_REPLY = [
    ["HANDSHAKE_A_ACCEPT_SOCKFD", 11],
    ["HANDSHAKE_A_ACCEPT_MESSAGE_TYPE", nl.HANDSHAKE_MSG_TYPE_SERVERHELLO],
    ["HANDSHAKE_A_ACCEPT_TIMEOUT", 20000],
    ["HANDSHAKE_A_ACCEPT_AUTH_MODE", nl.HANDSHAKE_AUTH_X509],
    ["HANDSHAKE_A_ACCEPT_PEER_IDENTITY", 0x11111111],
    ["HANDSHAKE_A_ACCEPT_PEER_IDENTITY", 0xFFFFFFFF],
    ["HANDSHAKE_A_ACCEPT_CERTIFICATE", {"attrs": [["HANDSHAKE_A_X509_CERT", 101],
                                                  ["HANDSHAKE_A_X509_PRIVKEY", 102]]}],
    ["HANDSHAKE_A_ACCEPT_CERTIFICATE", {"attrs": [["HANDSHAKE_A_X509_CERT", 201],
                                                  ["HANDSHAKE_A_X509_PRIVKEY", -1]]}],
    ["HANDSHAKE_A_ACCEPT_PEERNAME", "nfs.example.org"],
    ["HANDSHAKE_A_ACCEPT_KEYRING", 0x0ABCDEF0],
]


@pytest.mark.parametrize("attrs", [
    FULL_REPLY,
    [["HANDSHAKE_A_ACCEPT_SOCKFD", 4]],
    [["HANDSHAKE_A_ACCEPT_SOCKFD", -1], ["HANDSHAKE_A_ACCEPT_PEERNAME", "a"]],
    [["HANDSHAKE_A_ACCEPT_HANDLER_CLASS", 1]],
    [],
])
def test_accept_reply_encode_and_decode_agree_with_pyroute2(attrs):
    msg = nl.accept_msg()
    msg["cmd"] = nl.HANDSHAKE_CMD_ACCEPT
    msg["version"] = nl.FAMILY_VERSION
    msg["attrs"] = attrs
    data = pyroute2_bytes(msg)
    assert bytes(nl.encode(nl.accept_msg, nl.HANDSHAKE_CMD_ACCEPT, attrs)) == data
    ours = nl.decode(nl.accept_msg, data)
    assert ours.cmd == nl.HANDSHAKE_CMD_ACCEPT
    theirs = pyroute2_decoded(nl.accept_msg, data)
    if any(name == "HANDSHAKE_A_ACCEPT_SOCKFD" for name, _ in attrs):
        assert nl.parse_accept(ours) == nl.parse_accept(theirs)
    assert nl.ready_handler_class(ours) == nl.ready_handler_class(theirs)


def test_decode_reads_kernel_bytes_as_pyroute2_does():
    """Hand-laid bytes (§1.11) with what pyroute2 tolerates: an attribute the map does not
    know, NLA_F_NESTED on the nest, a peername with padding NULs, a name that is not UTF-8
    (kept as bytes), and a second READY in the same datagram."""

    def tlv(t, payload):
        return struct.pack("=HH", 4 + len(payload), t) + payload + b"\0" * (-len(payload) % 4)

    def message(cmd, body):
        header = struct.pack("=IHHII", 20 + len(body), FAKE_FAMILY_ID, 0, 1, 0)
        return header + struct.pack("=BBH", cmd, 1, 0) + body

    nest = tlv(1, struct.pack("=i", 5)) + tlv(9, b"?") + tlv(2, struct.pack("=i", 6))
    for name in (b"srv\0\0\0", b"\xff\xfe\0"):
        body = (tlv(1, struct.pack("=i", 9)) + tlv(42, b"unknown") + tlv(3, struct.pack("=I", 1))
                + tlv(5, struct.pack("=I", 2)) + tlv(6, struct.pack("=I", 77)) + tlv(6, struct.pack("=I", 78))
                + tlv(7 | 0x8000, nest) + tlv(8, name) + tlv(4, struct.pack("=I", 3000)))
        data = message(nl.HANDSHAKE_CMD_ACCEPT, body)
        assert nl.parse_accept(nl.decode(nl.accept_msg,
                                         data)) == nl.parse_accept(pyroute2_decoded(nl.accept_msg, data))
    ready = message(nl.HANDSHAKE_CMD_READY, tlv(2, struct.pack("=I", 1)))
    decoded = [nl.decode(nl.ready_msg, m) for _t, _s, m in nl.split_messages(ready + ready)]
    assert [nl.ready_handler_class(m) for m in decoded] == [1, 1]
    assert nl.ready_handler_class(nl.decode(nl.ready_msg, message(nl.HANDSHAKE_CMD_READY, b""))) is None


def test_every_message_class_has_a_fast_codec():
    """A new attribute kind in the YAML needs the codec taught first."""
    for classes in CLASSES.values():
        for cls in classes:
            nl._codec(cls)


def test_channel_gives_up_on_a_request_without_answer():
    """The wait for the kernel's answer is bounded (SO_RCVTIMEO, no poll per call): a request
    nobody answers is ETIMEDOUT, a TimeoutError."""
    import socket
    import time

    channel = nl.HandshakeChannel(0x10)
    mine, silent = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        assert channel.sock.gettimeout() is None  # blocking: no Python-level poll
        channel.sock.close()
        channel.sock = mine
        nl.bound_waits(mine, 0.2)
        start = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            channel.done(0, 5)
        assert info.value.errno == errno.ETIMEDOUT
        assert 0.15 < time.monotonic() - start < 5
        assert len(silent.recv(4096)) == len(nl.done_request(0, 5))  # the request went out
    finally:
        mine.close()
        silent.close()
