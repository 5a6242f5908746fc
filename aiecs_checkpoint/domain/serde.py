"""How stored values are decoded: an allowlist of types, and typed errors.

LangGraph's `JsonPlusSerializer` is permissive by default: a stored msgpack
extension names a module and a callable, and reading it imports and calls
them (`("os", "system", "...")` runs a command). Anyone able to write to the
store could then run code in every process that reads it. `CheckedSerializer`
wraps the serializer a saver and its engine use, so that:

* only LangGraph's safe types (`SAFE_MSGPACK_TYPES`: datetimes, UUIDs, sets,
  LangChain messages and documents, `Send`, `Interrupt`, `Command`, ...) and
  the types allowed explicitly are revived; any other type raises
  `BlockedTypeError` naming the type and how to allow it, before anything of
  it is imported or called, whatever the wrapped serializer's own allowlist
  (LangGraph's default `JsonPlusSerializer()` and `EncryptedSerializer`'s
  default inner serializer are permissive);
* a value that cannot be decrypted or decoded (tampered, another key or
  serializer) raises `CorruptDataError` saying why, never a raw `ValueError`;
* under an `EncryptedSerializer`, a stored value that is not encrypted is
  refused (`CorruptDataError`): LangGraph's own would read plaintext silently.

Allowing more types: `saver.with_allowlist([("myapp.models", "Order")])` (what
LangGraph's `compile()` does with the state schema's types when
`LANGGRAPH_STRICT_MSGPACK=true`), or
`CheckedSerializer(inner, allowed_modules=[Order])`; `allowed_modules=True`
revives any type (only for a store nobody else can write to).

The allowlist is enforced through LangGraph's serde events: LangGraph emits
one for every type outside its safe list before importing it, and the
listener registered here stops the decode there (`_Refused`, a
`BaseException` because LangGraph logs and ignores a listener's `Exception`).
The listener acts only inside `CheckedSerializer.guarded()`, so other
serializers in the process are not affected.
"""

from __future__ import annotations

import contextvars
import pickle
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from inspect import isclass
from typing import Any, Literal

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.event_hooks import (
    SerdeEvent,
    register_serde_event_listener,
)
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from aiecs_checkpoint.errors import BlockedTypeError, CorruptDataError

TypeKey = tuple[str, ...]
"""(module, name) of a type, as LangGraph's allowlists name it."""

Allowed = Iterable[TypeKey | type] | Literal[True]

DECODE_ERRORS = (
    ValueError,  # bad msgpack / UTF-8 / JSON, "MAC check failed", bad padding
    AssertionError,  # EncryptedSerializer: a cipher name it does not know
    NotImplementedError,  # an unknown type tag
    LookupError,
    EOFError,
    pickle.UnpicklingError,
)
"""What decoding a damaged stored value raises (never programming errors such as
`AttributeError` or `TypeError`, which propagate unchanged)."""


class _Refused(BaseException):
    """Stops a decode at the type that is not allowed (see the module docstring)."""


@dataclass(slots=True)
class _Watch:
    """The allowlist in force for the current decode, and what it refused."""

    allowed: frozenset[TypeKey] | Literal[True]
    refused: list[str] = field(default_factory=list)


_WATCH: contextvars.ContextVar[_Watch | None] = contextvars.ContextVar(
    "aiecs_checkpoint_serde_watch", default=None
)


def _on_serde_event(event: SerdeEvent) -> None:
    """Refuse a type outside the allowlist of the decode in progress."""
    watch = _WATCH.get()
    if watch is None:
        return
    key = (event["module"], event["name"])
    kind = event["kind"]
    if kind == "msgpack_unregistered_allowed" and (
        watch.allowed is True or key in watch.allowed
    ):
        return
    name = f"{event['module']}.{event['name']}"
    if kind == "msgpack_method_blocked":
        name += f".{event.get('method', '')}"
    watch.refused.append(name)
    raise _Refused(name)


register_serde_event_listener(_on_serde_event)


def _keys(types: Iterable[TypeKey | type]) -> frozenset[TypeKey]:
    return frozenset(
        (t.__module__, t.__name__) if isclass(t) else tuple(t)  # type: ignore[arg-type]
        for t in types
    )


def _with_allowlist(
    serde: SerializerProtocol, extra: frozenset[TypeKey]
) -> SerializerProtocol:
    """`serde` allowing `extra` too, when it has an allowlist of its own (a
    strict `JsonPlusSerializer`, also inside an `EncryptedSerializer`)."""
    if not extra:
        return serde
    if isinstance(serde, JsonPlusSerializer):
        return serde.with_msgpack_allowlist(extra)
    if isinstance(serde, EncryptedSerializer) and isinstance(
        serde.serde, JsonPlusSerializer
    ):
        inner = serde.serde.with_msgpack_allowlist(extra)
        return (
            serde if inner is serde.serde else EncryptedSerializer(serde.cipher, inner)
        )
    return serde


class CheckedSerializer(SerializerProtocol):
    """A serializer that decodes only allowed types and raises typed errors.

    Args:
        inner: The serializer doing the work (`JsonPlusSerializer`,
            `EncryptedSerializer`, ...); a strict `JsonPlusSerializer` by
            default. Reach it as `.inner`. Its own allowlist applies too: a
            type it blocks raises `BlockedTypeError` here.
        allowed_modules: Types revived beyond LangGraph's safe list, as
            classes or (module, name) tuples; `True` revives any type.

    LangGraph's safe types are revived without events, so `allowed` holds
    only the types allowed beyond them.
    """

    def __init__(
        self,
        inner: SerializerProtocol | None = None,
        *,
        allowed_modules: Allowed = (),
    ) -> None:
        if isinstance(inner, CheckedSerializer):
            raise TypeError("inner is already a CheckedSerializer")
        extra = frozenset() if allowed_modules is True else _keys(allowed_modules)
        if inner is None:  # strict, unless any type is allowed
            inner = (
                JsonPlusSerializer(allowed_msgpack_modules=True)
                if allowed_modules is True
                else JsonPlusSerializer(allowed_msgpack_modules=None)
            )
        base = inner
        self.inner: SerializerProtocol = _with_allowlist(base, extra)
        self.allowed: frozenset[TypeKey] | Literal[True] = (
            True if allowed_modules is True else extra
        )
        self.encrypted = isinstance(self.inner, EncryptedSerializer)

    def __repr__(self) -> str:
        allowed = "any type" if self.allowed is True else f"{len(self.allowed)} types"
        return f"CheckedSerializer({self.inner!r}, {allowed})"

    def with_msgpack_allowlist(
        self, extra_allowlist: Iterable[TypeKey | type]
    ) -> CheckedSerializer:
        """A serializer that also revives `extra_allowlist` (self when it
        already does)."""
        extra = _keys(extra_allowlist)
        if self.allowed is True or extra <= self.allowed:
            return self
        clone = CheckedSerializer.__new__(CheckedSerializer)
        clone.inner = _with_allowlist(self.inner, extra)
        clone.allowed = self.allowed | extra
        clone.encrypted = self.encrypted
        return clone

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        """The inner serializer's encoding (checked only when read back)."""
        return self.inner.dumps_typed(obj)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """The stored value, or `CorruptDataError` / `BlockedTypeError`."""
        return self.load(data)

    def load(self, data: tuple[str, bytes], where: str = "") -> Any:
        """`loads_typed`, naming `where` the value was in a typed error (e.g.
        "thread 't1' checkpoint '...' channel 'messages' item 3")."""
        type_ = self._tag(data, where)
        watch = _Watch(self.allowed)
        token = _WATCH.set(watch)
        try:
            value = self.inner.loads_typed(data)
        except _CAUGHT as exc:
            raise _failure(watch, type_, where, exc) from (
                None if watch.refused else exc
            )
        finally:
            _WATCH.reset(token)
        if watch.refused:  # inside a nested value LangGraph recovered from
            raise _blocked(watch.refused[0], where)
        return value

    @contextmanager
    def guarded(self, data: tuple[str, bytes], where: str = "") -> Iterator[None]:
        """Decode `data` inside, with every check of `load`: for a fast path
        that decodes with `.inner` (or below it) directly."""
        type_ = self._tag(data, where)
        watch = _Watch(self.allowed)
        token = _WATCH.set(watch)
        try:
            yield
        except _CAUGHT as exc:
            raise _failure(watch, type_, where, exc) from (
                None if watch.refused else exc
            )
        finally:
            _WATCH.reset(token)
        if watch.refused:
            raise _blocked(watch.refused[0], where)

    def _tag(self, data: tuple[str, bytes], where: str) -> str:
        """The type tag of a stored value, checked before anything is decoded."""
        try:
            type_, _ = data
        except (TypeError, ValueError):
            raise CorruptDataError(
                f"stored value{_place(where)} is not a (type, bytes) pair: {data!r:.80}"
            ) from None
        if self.encrypted and "+" not in str(type_):
            raise CorruptDataError(
                f"stored value{_place(where)} is not encrypted (type {type_!r}) "
                "although an EncryptedSerializer is configured: refusing to read "
                "plaintext it did not write"
            )
        return str(type_)


_CAUGHT = (_Refused, *DECODE_ERRORS)


def _place(where: str) -> str:
    return f" ({where})" if where else ""


def _failure(
    watch: _Watch, type_: str, where: str, exc: BaseException
) -> CorruptDataError:
    if watch.refused:
        return _blocked(watch.refused[0], where)
    return CorruptDataError(
        f"stored {type_} value{_place(where)} could not be decoded: "
        f"{type(exc).__name__}: {exc}"
    )


def _blocked(name: str, where: str) -> BlockedTypeError:
    module, _, attr = name.rpartition(".")
    return BlockedTypeError(
        f"stored value{_place(where)} names the type {name}, which is not in the "
        "deserialization allowlist; nothing of it was imported. If this type "
        "belongs in your graph state, allow it: "
        f"saver.with_allowlist([({module!r}, {attr!r})]) "
        "(LangGraph does so for the state schema's types when "
        "LANGGRAPH_STRICT_MSGPACK=true), or "
        f"CheckedSerializer(inner, allowed_modules=[({module!r}, {attr!r})]) as "
        "the serde of ContextEngineSaver and ContextEngine"
    )


def checked(serde: SerializerProtocol | None) -> CheckedSerializer:
    """`serde` wrapped in a `CheckedSerializer` (unchanged when it is one; the
    strict default when None)."""
    if isinstance(serde, CheckedSerializer):
        return serde
    return CheckedSerializer(serde)


def unwrap(serde: SerializerProtocol) -> SerializerProtocol:
    """The serializer a `CheckedSerializer` wraps (`serde` itself otherwise)."""
    return serde.inner if isinstance(serde, CheckedSerializer) else serde


def load(serde: SerializerProtocol, data: tuple[str, bytes], where: str) -> Any:
    """`serde.loads_typed(data)`, with `where` named in a typed error."""
    if isinstance(serde, CheckedSerializer):
        return serde.load(data, where)
    return serde.loads_typed(data)


__all__ = [
    "DECODE_ERRORS",
    "CheckedSerializer",
    "checked",
    "load",
    "unwrap",
]
