"""Drive our client against our server in memory with a hook between them that can
rewrite, drop, reorder, split or re-level what one side sends before the other sees it.

Used by the negative suite (tests/unit/test_tls_alerts.py) and the fuzz properties
(tests/unit/test_tls_fuzz.py). Unlike tests/tls_pair.run_pair, a hook here returns a list
of (level, bytes) deliveries, so a message can be moved to another crypto level or fed in
several receive() calls, and the Pair remembers which engine raised.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from quichsd.tls.certs import TrustStore
from quichsd.tls.client import ClientEngine
from quichsd.tls.config import Credentials, ExternalPsk, TlsConfig
from quichsd.tls.constants import CryptoLevel
from quichsd.tls.engine import TlsEngine
from quichsd.tls.events import SendHandshake, SessionTicketReceived
from quichsd.tls.messages import HandshakeMessage, decode_message, frame
from quichsd.tls.server import ServerEngine
from quichsd.tls.wire import Writer
from tests.pki import NOW, leaf, test_ca

T = NOW.timestamp()
CLIENT_TP = b"\x0f\x08clientid"
SERVER_TP = b"\x0f\x08serverid"
PSK = ExternalPsk(b"nvme-host-1", bytes(range(32)))

Delivery = tuple[CryptoLevel, bytes]
# hook(sender, level, data) -> None (deliver unchanged) | bytes (same level) | [(level, bytes)]
Hook = Callable[[str, CryptoLevel, bytes], "None | bytes | list[Delivery]"]


def trust() -> TrustStore:
    return TrustStore.from_certificates([test_ca().cert])


def creds(kind: str = "p256", cn: str = "localhost") -> Credentials:
    cert, key = leaf(kind, cn)
    return Credentials([cert], key)


def client_cfg(**kw) -> TlsConfig:
    base = dict(alpn_protocols=[b"h3"], server_name="localhost", trust=trust(),
                transport_parameters=CLIENT_TP)
    base.update(kw)
    return TlsConfig(**base)


def server_cfg(kind: str = "p256", **kw) -> TlsConfig:
    cert, key = leaf(kind)
    base = dict(alpn_protocols=[b"h3"], credentials=Credentials([cert], key), transport_parameters=SERVER_TP)
    base.update(kw)
    return TlsConfig(**base)


def psk_client_cfg(psk: ExternalPsk = PSK, **kw) -> TlsConfig:
    base = dict(alpn_protocols=[b"h3"], psks=[psk], transport_parameters=CLIENT_TP)
    base.update(kw)
    return TlsConfig(**base)


def psk_server_cfg(*psks: ExternalPsk, **kw) -> TlsConfig:
    base = dict(alpn_protocols=[b"h3"], psks=list(psks or (PSK,)), transport_parameters=SERVER_TP)
    base.update(kw)
    return TlsConfig(**base)


@dataclass
class Pair:
    """One client engine and one server engine wired together through an optional hook."""

    client_cfg: TlsConfig
    server_cfg: TlsConfig
    now: float = T
    client: ClientEngine = field(init=False)
    server: ServerEngine = field(init=False)
    # Every SendHandshake as the sender produced it, in order: (sender, level, data).
    sent: list[tuple[str, CryptoLevel, bytes]] = field(default_factory=list)
    events: dict[str, list] = field(default_factory=lambda: {"client": [], "server": []})
    # The side whose receive() was running last: after an exception, the side that raised.
    receiver: str | None = None

    def __post_init__(self) -> None:
        self.client = ClientEngine(self.client_cfg)
        self.server = ServerEngine(self.server_cfg)

    def engine(self, side: str) -> TlsEngine:
        return self.client if side == "client" else self.server

    def run(self, hook: Hook | None = None) -> Pair:
        queue = [("client", e) for e in self.client.start(self.now)]
        while queue:
            sender, event = queue.pop(0)
            self.events[sender].append(event)
            if not isinstance(event, SendHandshake):
                continue
            self.sent.append((sender, event.level, event.data))
            out = hook(sender, event.level, event.data) if hook is not None else None
            if out is None:
                deliveries: list[Delivery] = [(event.level, event.data)]
            elif isinstance(out, (bytes, bytearray)):
                deliveries = [(event.level, bytes(out))]
            else:
                deliveries = list(out)
            target = "server" if sender == "client" else "client"
            for level, data in deliveries:
                self.receiver = target
                produced = self.engine(target).receive(level, data, self.now)
                queue.extend((target, e) for e in produced)
        self.receiver = None
        return self

    @property
    def session(self):
        tickets = [e for e in self.events["client"] if isinstance(e, SessionTicketReceived)]
        return tickets[0].session if tickets else None

    def first(self, sender: str, msg_type: int) -> bytes:
        """The first `msg_type` message `sender` sent, header included."""
        for who, _, data in self.sent:
            if who == sender:
                for raw in split(data):
                    if raw[0] == msg_type:
                        return raw
        raise LookupError(f"{sender} sent no message of type {msg_type}")


# -- message surgery ---------------------------------------------------------------------


def split(data: bytes) -> list[bytes]:
    """A flight as its whole messages (headers included); the bytes must be well framed."""
    out, pos = [], 0
    while pos < len(data):
        end = pos + 4 + int.from_bytes(data[pos + 1 : pos + 4], "big")
        out.append(data[pos:end])
        pos = end
    assert pos == len(data), "flight does not end on a message boundary"
    return out


def reframe(raw: bytes, body: bytes) -> bytes:
    """The message `raw` with its body replaced and its length header fixed."""
    return frame(raw[0], body)


def with_extension_list(msg: HandshakeMessage, pairs: list[tuple[int, bytes]]) -> bytes:
    """`msg` (a hello or EncryptedExtensions, whose extension block comes last) with an
    extension block written from `pairs` verbatim: duplicates and any order allowed."""
    saved = msg.extensions  # type: ignore[attr-defined]
    msg.extensions = {}  # type: ignore[attr-defined]
    try:
        head = msg.encode_body()[:-2]  # drop the empty block's 0x0000 length
    finally:
        msg.extensions = saved  # type: ignore[attr-defined]
    block = Writer()
    for ext_type, body in pairs:
        block.u16(ext_type)
        block.vec(2, body)
    w = Writer()
    w.vec(2, block.getvalue())
    return frame(msg.msg_type, head + w.getvalue())


def rewrite(sender: str, msg_type: int, fn: Callable, nth: int = 0) -> Hook:
    """Hook: pass the `nth` `msg_type` message from `sender` through `fn`.

    fn gets the decoded message and returns None (it edited the message in place), a
    message to encode, raw bytes (one or more whole messages), or a list of raw messages.
    """
    seen = 0

    def hook(who: str, level: CryptoLevel, data: bytes):
        nonlocal seen
        if who != sender:
            return None
        out, changed = [], False
        for raw in split(data):
            if raw[0] != msg_type:
                out.append(raw)
                continue
            if seen == nth:
                out.extend(_apply(fn, raw))
                changed = True
            else:
                out.append(raw)
            seen += 1
        return b"".join(out) if changed else None

    return hook


def rewrite_raw(sender: str, msg_type: int, fn: Callable[[bytes], bytes], nth: int = 0) -> Hook:
    """Hook: like rewrite() but `fn` maps the raw message bytes (header included)."""
    return rewrite(sender, msg_type, lambda msg: fn(msg.encode()), nth)


def _apply(fn: Callable, raw: bytes) -> list[bytes]:
    msg = decode_message(raw)
    result = fn(msg)
    if result is None:
        return [msg.encode()]
    if isinstance(result, HandshakeMessage):
        return [result.encode()]
    if isinstance(result, (bytes, bytearray)):
        return [bytes(result)]
    return list(result)


def reflight(sender: str, level: CryptoLevel, fn: Callable[[list[bytes]], list[bytes] | list[Delivery]],
             nth: int = 0) -> Hook:
    """Hook: hand the `nth` flight `sender` sends at `level`, split into messages, to `fn`;
    it returns the raw messages to deliver at that level, or explicit (level, bytes) pairs."""
    seen = 0

    def hook(who: str, at: CryptoLevel, data: bytes):
        nonlocal seen
        if who != sender or at != level:
            return None
        seen += 1
        if seen - 1 != nth:
            return None
        result = fn(split(data))
        if result and isinstance(result[0], tuple):
            return list(result)  # type: ignore[arg-type]
        return [(level, b"".join(result))]  # type: ignore[arg-type]

    return hook

