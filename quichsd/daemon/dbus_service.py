"""D-Bus status/control interface: org.quichsd1 at /org/quichsd1, interface org.quichsd1.Daemon.

Interface (exact signatures)::

    method   GetCounters() -> a{st}        accepted, succeeded, failed, in_flight, failed.<ERRNO>
    method   GetRecent()   -> aa{sv}       time d, peer s, role s, alpn s, suite s,
                                           duration_ms d, status i, status_name s
    method   Reload()      -> b            runs the reload callback; True if the new config took
    property Version       s  (read)
    property InFlight      t  (read)
    signal   HandshakeCompleted(s peer, s role, s alpn, s suite, d duration_ms, i status)

Nothing secret is exposed: the data comes from HandshakeStats, which only stores public facts.

The daemon is threaded, so DbusService runs its own asyncio loop in its own thread
(start()/stop()); HandshakeStats listeners fire in whatever thread finished a handshake and
are handed to that loop with call_soon_threadsafe().  read_status() is the synchronous client
side for `quichsd status`.

The D-Bus signatures are given to the decorators of dbus_typed.py, not written as
annotations (which dbus-next would read, and mypy could not).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType, MessageType, NameFlag, RequestNameReply
from dbus_next.message import Message
from dbus_next.service import ServiceInterface
from dbus_next.signature import Variant

from .dbus_typed import dbus_method, dbus_read_property, dbus_signal, disconnect, disconnected
from .stats import HandshakeStats

__all__ = [
    "SERVICE_NAME", "OBJECT_PATH", "INTERFACE_NAME",
    "DaemonInterface", "DbusService", "DbusServiceError", "read_status", "read_status_async",
    "open_bus", "close_bus",
]

SERVICE_NAME = "org.quichsd1"
OBJECT_PATH = "/org/quichsd1"
INTERFACE_NAME = "org.quichsd1.Daemon"

log = logging.getLogger(__name__)

ReloadCallback = Callable[[], Any]


class DbusServiceError(Exception):
    """The bus could not be reached, the name could not be owned, or a call failed."""


def _recent_to_variants(record: dict[str, Any]) -> dict[str, Variant]:
    return {
        "time": Variant("d", float(record["time"])),
        "peer": Variant("s", record["peer"]),
        "role": Variant("s", record["role"]),
        "alpn": Variant("s", record["alpn"]),
        "suite": Variant("s", record["suite"]),
        "duration_ms": Variant("d", float(record["duration_ms"])),
        "status": Variant("i", int(record["status"])),
        "status_name": Variant("s", record["status_name"]),
    }


class DaemonInterface(ServiceInterface):
    """org.quichsd1.Daemon; method handlers run on the service's event loop."""

    def __init__(self, stats: HandshakeStats, reload_cb: ReloadCallback | None = None,
                 version: str = "") -> None:
        super().__init__(INTERFACE_NAME)
        self._stats = stats
        self._reload_cb = reload_cb
        self._version = version

    @dbus_method("a{st}")
    def GetCounters(self) -> dict[str, int]:
        return {k: int(v) for k, v in self._stats.counters().items()}

    @dbus_method("aa{sv}")
    def GetRecent(self) -> list[dict[str, Variant]]:
        return [_recent_to_variants(r) for r in self._stats.recent()]

    @dbus_method("b")
    async def Reload(self) -> bool:
        if self._reload_cb is None:
            return False
        loop = asyncio.get_running_loop()
        try:
            # In a worker thread: reading and validating a config must not stall the bus.
            result = await loop.run_in_executor(None, self._reload_cb)
        except Exception:
            log.exception("reload callback failed")
            return False
        return bool(result)

    @dbus_read_property("s")
    def Version(self) -> str:
        return self._version

    @dbus_read_property("t")
    def InFlight(self) -> int:
        return int(self._stats.counters()["in_flight"])

    @dbus_signal("ssssdi", args=("s", "s", "s", "s", "d", "i"))
    def HandshakeCompleted(self, peer: str, role: str, alpn: str, suite: str,
                           duration_ms: float, status: int) -> list[str | float | int]:
        return [peer, role, alpn, suite, float(duration_ms), int(status)]


def _release_socket(bus: Any) -> None:
    """dbus-next shuts its socket down but never closes it (nor on a failed connect)."""
    for attr in ("_stream", "_sock"):
        obj = getattr(bus, attr, None)
        if obj is not None:
            with contextlib.suppress(Exception):
                obj.close()


class _MessageBus(MessageBus):
    """MessageBus that closes its socket when the constructor's connect attempt fails."""

    def _setup_socket(self) -> None:
        setup: Callable[[], None] = super()._setup_socket  # unannotated in dbus-next
        try:
            setup()
        except Exception:
            _release_socket(self)
            raise


async def close_bus(bus: MessageBus, timeout: float = 2.0) -> None:
    """Disconnect a dbus-next bus, wait for it to finish and close its socket."""
    try:
        disconnect(bus)
        await asyncio.wait_for(asyncio.shield(disconnected(bus)), timeout)
    except (Exception, asyncio.CancelledError):
        pass
    finally:
        _release_socket(bus)


async def open_bus(bus_address: str | None = None, system: bool = True) -> MessageBus:
    """A connected dbus-next bus; DbusServiceError (and no leaked socket) if it cannot be."""
    bus = None
    try:
        bus = _MessageBus(**_bus_kwargs(bus_address, system))
        return await bus.connect()
    except Exception as e:
        if bus is not None:
            _release_socket(bus)
        where = bus_address or ("system bus" if system else "session bus")
        raise DbusServiceError(f"cannot connect to the D-Bus ({where}): {e}") from e


def _bus_kwargs(bus_address: str | None, system: bool) -> dict[str, Any]:
    if bus_address:
        return {"bus_address": bus_address}
    return {"bus_type": BusType.SYSTEM if system else BusType.SESSION}


class DbusService:
    """Owns the bus connection, the well-known name and the exported interface.

    Either run it in its own thread (start()/stop(), or as a context manager), or call
    `await connect()` / `await close()` from a loop you already run.
    """

    def __init__(self, stats: HandshakeStats, reload_cb: ReloadCallback | None = None, *,
                 bus_address: str | None = None, system: bool = True,
                 name: str = SERVICE_NAME, path: str = OBJECT_PATH, version: str = "") -> None:
        self.stats = stats
        self.interface = DaemonInterface(stats, reload_cb, version)
        self._bus_address = bus_address
        self._system = system
        self._name = name
        self._path = path
        self._bus: MessageBus | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._stop_fut: asyncio.Future[None] | None = None

    # -- in an existing loop ---------------------------------------------------------------

    async def connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        bus = await open_bus(self._bus_address, self._system)
        self._bus = bus
        bus.export(self._path, self.interface)
        try:
            reply = await bus.request_name(self._name, NameFlag.DO_NOT_QUEUE)
        except Exception as e:
            self._bus = None
            await close_bus(bus)
            raise DbusServiceError(f"cannot request the name {self._name}: {e}") from e
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            self._bus = None
            await close_bus(bus)
            raise DbusServiceError(f"the name {self._name} is already owned ({reply.name})")
        self.stats.add_listener(self._on_record)

    async def close(self) -> None:
        self.stats.remove_listener(self._on_record)
        bus, self._bus = self._bus, None
        if bus is not None:
            await close_bus(bus)

    @property
    def connected(self) -> bool:
        return self._bus is not None and self._bus.connected

    # -- feeding the signal (any thread) ---------------------------------------------------

    def _on_record(self, record: dict[str, Any]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closed between the check and the call
            loop.call_soon_threadsafe(self._emit, record)

    def _emit(self, record: dict[str, Any]) -> None:
        if self._bus is None or not self._bus.connected:
            return
        try:
            self.interface.HandshakeCompleted(record["peer"], record["role"], record["alpn"],
                                              record["suite"], record["duration_ms"],
                                              record["status"])
        except Exception:
            log.exception("cannot emit HandshakeCompleted")

    # -- in its own thread -----------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> DbusService:
        if self._thread is not None:
            raise RuntimeError("DbusService already started")
        thread = self._thread = self._launch()
        if not self._ready.wait(timeout):
            self.stop()
            raise DbusServiceError("timed out connecting to the D-Bus")
        if self._start_error is not None:
            err = self._start_error
            thread.join(timeout)
            self._thread = None
            raise err
        return self

    def _launch(self) -> threading.Thread:
        """The service's thread, started afresh (no error or readiness of an earlier start)."""
        self._ready.clear()
        self._start_error = None
        thread = threading.Thread(target=self._thread_main, name="quichsd-dbus", daemon=True)
        thread.start()
        return thread

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self.connect())
            except BaseException as e:
                self._start_error = e
                return
            self._stop_fut = loop.create_future()
            self._ready.set()
            loop.run_until_complete(self._serve())
        finally:
            self._ready.set()
            try:
                loop.run_until_complete(self.close())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    async def _serve(self) -> None:
        assert self._bus is not None and self._stop_fut is not None
        # Shielded: cancelling a plain wait_for_disconnect() would cancel the bus's own future.
        gone = asyncio.ensure_future(asyncio.shield(disconnected(self._bus)))
        done, _ = await asyncio.wait({self._stop_fut, gone}, return_when=asyncio.FIRST_COMPLETED)
        if gone in done:
            exc = gone.exception()
            log.warning("lost the D-Bus connection%s", f": {exc}" if exc else "")
        else:
            gone.cancel()

    def stop(self, timeout: float = 5.0) -> None:
        thread, loop, fut = self._thread, self._loop, self._stop_fut
        if thread is None:
            return
        if loop is not None and fut is not None and not loop.is_closed():
            def _set() -> None:
                if not fut.done():
                    fut.set_result(None)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_set)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> DbusService:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# -- client ----------------------------------------------------------------------------------

def _unwrap(value: Any) -> Any:
    if isinstance(value, Variant):
        return _unwrap(value.value)
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


async def read_status_async(bus_address: str | None = None, *, system: bool = True,
                            name: str = SERVICE_NAME, path: str = OBJECT_PATH) -> dict[str, Any]:
    """{'counters': {...}, 'recent': [{...}, ...], 'version': str} from a running daemon."""
    bus = await open_bus(bus_address, system)
    try:
        async def call(member: str, iface: str = INTERFACE_NAME, signature: str = "",
                       body: list[Any] | None = None) -> list[Any]:
            reply = await bus.call(Message(destination=name, path=path, interface=iface,
                                           member=member, signature=signature, body=body or []))
            if reply is None:  # only for a call flagged NO_REPLY_EXPECTED, which this is not
                raise DbusServiceError(f"{member}: no reply")
            if reply.message_type == MessageType.ERROR:
                detail = reply.body[0] if reply.body else ""
                raise DbusServiceError(f"{member}: {reply.error_name}: {detail}")
            return reply.body

        counters = (await call("GetCounters"))[0]
        recent = (await call("GetRecent"))[0]
        version = (await call("Get", "org.freedesktop.DBus.Properties", "ss",
                              [INTERFACE_NAME, "Version"]))[0]
        return {"counters": _unwrap(counters), "recent": _unwrap(recent),
                "version": _unwrap(version)}
    finally:
        await close_bus(bus)


def read_status(bus_address: str | None = None, *, system: bool = True,
                timeout: float = 5.0) -> dict[str, Any]:
    """Synchronous read_status_async() with a timeout (for the `quichsd status` command)."""
    async def run() -> dict[str, Any]:
        return await asyncio.wait_for(read_status_async(bus_address, system=system), timeout)
    try:
        return asyncio.run(run())
    except TimeoutError:
        raise DbusServiceError(f"no answer from {SERVICE_NAME} within {timeout:g}s") from None
