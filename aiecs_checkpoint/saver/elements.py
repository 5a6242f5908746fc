"""How one list element is kept after decoding, and copied for each reader.

Every read hands the caller objects of its own, at every depth, without
decoding every element again. An element is decoded once per process and kept
in one of two forms (`ElementCodec.ingest`):

* `PLAIN`: it decodes from LangGraph's msgpack without extension types (plain
  dicts, lists, strings, numbers, bytes). Its plaintext msgpack bytes are kept;
  a read joins the bytes of all such elements behind one msgpack array header
  and decodes them with one C-level call, so each reader gets fresh objects at
  C speed.
* `OBJECT`: anything else (LangChain messages and other pydantic models,
  tuples, custom classes). The decoded value is kept and never handed out;
  a read gets `fresh(value)`, a deep copy that rebuilds dicts, lists and
  pydantic models directly and shares only immutable leaves.

Three shapes are cheaper still: an immutable value (a string, a number) is
`SHARED` as is; a dict whose values are all immutable scalars is `FLAT`: each
reader gets a shallow copy, made at C speed for a run of them; a pydantic model
(a LangChain message) is kept as a `recipe` and rebuilt without validation:
one dict copy for its immutable fields, new empty containers, and `fresh` for
the rest.

`unchanged` tells whether objects a caller passes back (elements of a list it
read) still equal what is stored, so a put can reuse their stored positions
without serializing them: plain elements are compared by their msgpack bytes
(one C-level dumps of the whole run), others with `==`.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import enum
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import ormsgpack
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import BaseModel

from aiecs_checkpoint.domain.serde import unwrap
from aiecs_checkpoint.stores import refs
from aiecs_checkpoint.stores.records import Typed

MISSING = 0
PLAIN = 1
OBJECT = 2
FLAT = 3
SHARED = 4
MODEL = 5

_SCALARS: frozenset[type] = frozenset({str, int, float, bool, bytes, type(None)})
"""Exact types a flat dict's values may have (immutable: shared by copies)."""

_IMMUTABLE: frozenset[type] = frozenset(
    {
        str,
        int,
        float,
        bool,
        complex,
        bytes,
        type(None),
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        datetime.timezone,
        uuid.UUID,
        decimal.Decimal,
        range,
    }
)
"""Types whose instances can be shared between readers (never mutated)."""

_new = object.__new__
_set = object.__setattr__


def fresh(value: Any) -> Any:
    """A deep copy sharing only immutable leaves, fast for the shapes state holds
    (dicts, lists, pydantic models such as LangChain messages); anything else
    goes through `copy.deepcopy`."""
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if kind is dict:
        return {k: v if type(v) in _IMMUTABLE else fresh(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _IMMUTABLE else fresh(v) for v in value]
    if kind is tuple:
        return tuple(fresh(v) for v in value)
    if isinstance(value, BaseModel):
        return _fresh_model(value)
    if isinstance(value, enum.Enum):
        return value
    return copy.deepcopy(value)


def _fresh_model(value: BaseModel) -> BaseModel:
    """A pydantic model rebuilt without validation (as `model_construct`), its
    fields deep-copied with `fresh`."""
    new = _new(type(value))
    fields = value.__dict__
    _set(
        new,
        "__dict__",
        {k: v if type(v) in _IMMUTABLE else fresh(v) for k, v in fields.items()},
    )
    _set(new, "__pydantic_fields_set__", set(value.__pydantic_fields_set__))
    extra = value.__pydantic_extra__
    _set(new, "__pydantic_extra__", None if extra is None else fresh(extra))
    private = value.__pydantic_private__
    _set(new, "__pydantic_private__", None if private is None else fresh(private))
    return new


_EMPTY_DICT = 0
_EMPTY_LIST = 1
_PACKED = 2
_DEEP = 3

Recipe = tuple[
    int, dict[str, Any], tuple[tuple[str, int, Any], ...], tuple[str, ...], Any, Any
]
"""A pydantic model kept for copying: its class (an index in `_CLASSES`), the
fields holding immutable values, the other fields (how to rebuild each),
fields set, extra, private."""

_CLASSES: list[type] = []
_CLASS_INDEX: dict[type, int] = {}
"""Model classes by index: a recipe names its class by number, so that it
holds no reference the garbage collector would have to follow."""
_CLASS_LOCK = threading.Lock()


def _class_index(cls: type) -> int:
    index = _CLASS_INDEX.get(cls)
    if index is None:
        with _CLASS_LOCK:
            index = _CLASS_INDEX.get(cls)
            if index is None:
                index = _CLASS_INDEX[cls] = len(_CLASSES)
                _CLASSES.append(cls)
    return index


def _pack(value: Any) -> bytes | None:
    """`value` as msgpack when it is plain data that decodes back exactly
    (dicts with str keys, lists, scalars), else None."""
    try:
        blob = ormsgpack.packb(value)
    except (TypeError, ormsgpack.MsgpackEncodeError):
        return None
    return blob if ormsgpack.unpackb(blob) == value else None


def recipe(value: BaseModel) -> Recipe:
    """How to rebuild `value` quickly (`build`): immutable fields are copied
    with one dict copy, empty containers made anew, plain data decoded from
    msgpack (C speed), anything else deep-copied. Kept as tuples, bytes and
    dicts of immutable values, a recipe costs the garbage collector nothing
    (CPython stops tracking such tuples and dicts)."""
    base: dict[str, Any] = {}
    rest: list[tuple[str, int, Any]] = []
    for name, field in value.__dict__.items():
        kind = type(field)
        if kind in _IMMUTABLE:
            base[name] = field
        elif kind is dict and not field:
            rest.append((name, _EMPTY_DICT, None))
        elif kind is list and not field:
            rest.append((name, _EMPTY_LIST, None))
        elif (blob := _pack(field)) is not None:
            rest.append((name, _PACKED, blob))
        else:
            rest.append((name, _DEEP, field))
    return (
        _class_index(type(value)),
        base,
        tuple(rest),
        tuple(value.__pydantic_fields_set__),
        value.__pydantic_extra__,
        value.__pydantic_private__,
    )


def _field(how: int, field: Any) -> Any:
    if how == _EMPTY_DICT:
        return {}
    if how == _EMPTY_LIST:
        return []
    if how == _PACKED:
        return ormsgpack.unpackb(field)
    return fresh(field)


def build(kept: Recipe) -> BaseModel:
    """A fresh model from its recipe (no validation, as `model_construct`)."""
    cls, base, rest, fields_set, extra, private = kept
    fields = base.copy()
    for name, how, field in rest:
        fields[name] = _field(how, field)
    new: BaseModel = _new(_CLASSES[cls])
    _set(new, "__dict__", fields)
    _set(new, "__pydantic_fields_set__", set(fields_set))
    _set(new, "__pydantic_extra__", None if extra is None else fresh(extra))
    _set(new, "__pydantic_private__", None if private is None else fresh(private))
    return new


def array_header(n: int) -> bytes:
    """The msgpack header of an array of `n` items (as ormsgpack writes it)."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


_PLAIN_OPTION = ormsgpack.OPT_NON_STR_KEYS
"""How LangGraph's JsonPlusSerializer decodes msgpack (without its ext hook)."""


class ElementCodec:
    """Decodes list elements once and copies them for each reader (see the
    module docstring). The plain path is used only with LangGraph's
    `JsonPlusSerializer` (possibly inside an `EncryptedSerializer`), whose
    msgpack encoding of a list is an array header plus its elements'
    encodings; any other serializer keeps every element as an object."""

    def __init__(self, serde: SerializerProtocol) -> None:
        self.serde = serde
        inner: Any = unwrap(serde)  # a CheckedSerializer's inner serializer
        self._cipher: Any = None
        if isinstance(inner, EncryptedSerializer):
            inner, self._cipher = inner.serde, inner.cipher
        self._inner = inner
        self._plain = isinstance(inner, JsonPlusSerializer)

    def ingest(
        self, item: Typed, load: Callable[[Typed], Any] | None = None
    ) -> tuple[int, Any]:
        """Decode an element and choose how to keep it: (SHARED, an immutable
        value), (FLAT, a dict of immutable values: copied shallowly), (PLAIN,
        its plaintext msgpack) or (OBJECT, value). `load` decodes a ref value
        (`stores.refs`: an element that points into another log)."""
        if load is not None and refs.is_ref(item):
            return OBJECT, load(item)
        value = self.serde.loads_typed(item)
        kind = type(value)
        if kind in _IMMUTABLE:
            return SHARED, value
        if (
            kind is dict
            and all(type(k) is str for k in value)
            and all(type(v) in _SCALARS for v in value.values())
        ):
            return FLAT, value
        if isinstance(value, BaseModel):
            return MODEL, recipe(value)
        if self._plain and kind in (dict, list):
            blob = self._plaintext(item)
            if blob is not None:
                try:
                    ormsgpack.unpackb(blob, option=_PLAIN_OPTION)
                except (ormsgpack.MsgpackDecodeError, TypeError, ValueError):
                    pass
                else:
                    return PLAIN, blob
        return OBJECT, value

    def _plaintext(self, item: Typed) -> bytes | None:
        """The element's msgpack bytes (decrypted under EncryptedSerializer)."""
        kind, data = item
        if kind == "msgpack":
            return data
        if self._cipher is not None and kind.startswith("msgpack+"):
            return bytes(self._cipher.decrypt(kind.split("+", 1)[1], data))
        return None

    @staticmethod
    def decode_plain(blobs: Sequence[bytes]) -> list[Any]:
        """Fresh objects of plain elements: one C-level decode of them all."""
        if not blobs:
            return []
        joined = array_header(len(blobs)) + b"".join(blobs)
        return ormsgpack.unpackb(joined, option=_PLAIN_OPTION)  # type: ignore[no-any-return]

    def plain_equal(self, values: Sequence[Any], blobs: Sequence[bytes]) -> bool:
        """True when `values` encode to exactly these plain elements."""
        try:
            kind, data = self._inner.dumps_typed(list(values))
        except Exception:
            return False
        if kind != "msgpack":
            return False
        return bool(data == array_header(len(blobs)) + b"".join(blobs))


__all__ = [
    "FLAT",
    "MISSING",
    "MODEL",
    "OBJECT",
    "PLAIN",
    "SHARED",
    "ElementCodec",
    "array_header",
    "build",
    "fresh",
    "recipe",
]
