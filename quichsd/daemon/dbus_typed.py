"""Typed front for the untyped parts of dbus-next: its service decorators (method,
signal, dbus_property) and the bus's disconnect calls.

dbus-next reads a member's D-Bus signature from the Python annotations of the function,
which must then be signature strings (`-> "a{st}"`): mypy reads those as names of types
that do not exist, and the decorators themselves are untyped. Here the D-Bus signature is
an argument of the decorator instead. It is set as the function's `__signature__`, which
`inspect.signature` (what dbus-next reads) returns first, so the function keeps real
Python annotations for mypy and dbus-next sees the same strings as before.
"""
from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import PropertyAccess
from dbus_next.service import dbus_property, method, signal

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")


def _with_dbus_types(fn: Callable[..., Any], returns: str, args: Sequence[str]) -> None:
    """Give `fn` (a method: self first) the D-Bus types `args` and `returns` as annotations."""
    sig = inspect.signature(fn)
    first, *params = sig.parameters.values()
    if len(params) != len(args):
        raise TypeError(f"{fn.__qualname__}: {len(params)} parameters, {len(args)} D-Bus types")
    typed = [first, *(p.replace(annotation=a) for p, a in zip(params, args, strict=True))]
    fn.__signature__ = sig.replace(parameters=typed,  # type: ignore[attr-defined]  # see below
                                   return_annotation=returns or inspect.Signature.empty)
    # (typeshed does not declare __signature__ on callables; inspect.signature reads it first)


def dbus_method(returns: str = "",
                args: Sequence[str] = ()) -> Callable[[Callable[..., Any]], Callable[..., None]]:
    """A D-Bus method of a ServiceInterface. dbus-next calls the function itself; what
    the class keeps under its name is a marker that returns None when called directly."""
    def decorate(fn: Callable[..., Any]) -> Callable[..., None]:
        _with_dbus_types(fn, returns, args)
        marker: Callable[..., None] = method()(fn)
        return marker
    return decorate


def dbus_signal(returns: str, args: Sequence[str] = ()) -> Callable[[F], F]:
    """A D-Bus signal: calling the method computes the signal's body and emits it."""
    def decorate(fn: F) -> F:
        _with_dbus_types(fn, returns, args)
        emitting: F = signal()(fn)
        return emitting
    return decorate


def dbus_read_property(returns: str) -> Callable[[Callable[[Any], R]], property]:
    """A read-only D-Bus property whose getter returns type `returns`."""
    def decorate(fn: Callable[[Any], R]) -> property:
        _with_dbus_types(fn, returns, ())
        prop: property = dbus_property(access=PropertyAccess.READ)(fn)
        return prop
    return decorate


class _Closing(Protocol):
    """The types of MessageBus's two unannotated disconnect calls."""

    def disconnect(self) -> None: ...

    def wait_for_disconnect(self) -> Awaitable[None]: ...


def disconnect(bus: MessageBus) -> None:
    """Start closing the bus connection (MessageBus.disconnect)."""
    closing: _Closing = bus
    closing.disconnect()


def disconnected(bus: MessageBus) -> Awaitable[None]:
    """Done when the bus connection is closed; raises what closed it, if an error did."""
    closing: _Closing = bus
    return closing.wait_for_disconnect()
