"""The thread index: which metadata a filtered `list_threads` finds by digest.

A filter matches a thread's latest checkpoint's metadata (`codec.matches`).
So that a filtered page costs the threads it returns, not every thread, each
put stores with its row the *index entries* of its metadata
(`CheckpointRow.index`), and every store keeps, per entry, the threads whose
latest row has it, in activity order. A filtered listing walks the entries of
the filter's pairs and applies the exact filter to each candidate: digests are
an index, never the truth.

Indexed: every top-level metadata key with a scalar value (str, int, float,
bool, None), except LangGraph's per-checkpoint `step` and `source`. That is
`user_id`, `run_id`, and every other scalar key LangGraph copies from the run
config's `configurable` and `metadata` (all but `__`-prefixed keys and its own
`thread_id`, `checkpoint_*` and `langgraph_*` keys), plus whatever a raw `put`
writes. A filter pair on another key (`step`, `source`), or with a non-scalar
value, uses no index; a filter without any indexed pair visits every thread,
as before. Values compare as `==` does: `True`, `1` and `1.0` are one entry,
`"1"` another. A key holding a value that is not a scalar but might equal one
(a `Decimal`, any object other than a list, tuple, dict, set or bytes) gets a
"some value" entry that every filter on that key visits too.

An entry is `blake2b(key, value)` under a secret: with the plain serializer the
secret is empty (metadata is readable in the store anyway, so the digests
reveal nothing more); under `EncryptedSerializer` it is 32 random bytes made
once per store and kept in it serialized by that serializer, so encrypted
(`CheckpointStore.index_secret`). Someone reading the store then can neither
read an indexed value nor confirm a guessed one, but can see which threads
share a value of a key (the same digest), like the run-id digests already
stored. Each row's index also holds the id of the secret it was made with
(`#p` for the plain one, `#k` + 16 hex digits); a row made under another
secret (an older store, a flushed Redis whose archive restored it, a switch
to encryption) or before the index existed (`#?`) is a candidate of every
filter until its thread is written again, so no thread is ever missed.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

from aiecs_checkpoint.errors import InvalidConfigError
from aiecs_checkpoint.stores.ops import Op
from aiecs_checkpoint.stores.protocols import CheckpointStore
from aiecs_checkpoint.stores.records import IndexQuery

NOT_INDEXED = frozenset({"step", "source"})
"""Metadata keys without an index: they change with nearly every checkpoint."""

PLAIN_KEY_ID = "#p"
"""Key id of digests made without a secret (a serializer that does not encrypt)."""

_PERSON = b"aiecs-thread-ix"
_ANY = b"?"
"""Canonical form standing for "a value that is not a scalar but may equal one"."""

_NEVER_SCALAR = (list, tuple, dict, set, frozenset, bytes, bytearray)
"""Types whose values never equal a str, int, float, bool or None."""


_EXACT = frozenset({str, int, float, bool, type(None)})
"""Value types whose (type, value) identifies the canonical form (a cache key)."""

_CACHE_SIZE = 4096
"""Metadata shapes whose entries an `IndexKey` keeps (then it starts afresh)."""


@dataclass(frozen=True, slots=True)
class IndexKey:
    """The secret digests are made with, and its id (stored with each row)."""

    key_id: str
    secret: bytes
    cache: dict[tuple[Any, ...], tuple[str, ...]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )
    """`metadata_index` results by the metadata's indexed (key, type, value)s:
    a thread's puts repeat the same user and config, so hashing is skipped."""

    @classmethod
    def of(cls, secret: bytes) -> IndexKey:
        """The key of a random secret; its id is a digest of it."""
        tag = hashlib.blake2b(b"key id", key=secret, digest_size=8, person=_PERSON)
        return cls("#k" + tag.hexdigest(), secret)

    def digest(self, name: str, canonical_value: bytes) -> str:
        """The entry of (metadata key, canonical value)."""
        raw = name.encode("utf-8", "surrogatepass")
        h = hashlib.blake2b(digest_size=16, key=self.secret, person=_PERSON)
        h.update(struct.pack(">I", len(raw)) + raw + canonical_value)
        return h.hexdigest()


PLAIN = IndexKey(PLAIN_KEY_ID, b"")


def canonical(value: object) -> bytes | None:
    """One byte string per class of `==`-equal scalars (None: not a scalar).

    `bool` and integral floats become ints (`True == 1 == 1.0`); subclasses
    count as their base type, as `==` compares them.
    """
    if value is None:
        return b"n"
    if isinstance(value, bool):
        return b"i%d" % int(value)
    if isinstance(value, int):
        return b"i%d" % int.__int__(value)
    if isinstance(value, float):
        number = float.__float__(value)
        if number.is_integer():
            return b"i%d" % int(number)
        return b"f" + float.__repr__(number).encode()
    if isinstance(value, str):
        return b"s" + str.__str__(value).encode("utf-8", "surrogatepass")
    return None


def _odd_form(value: object) -> bytes | None:
    """The form of a value of another type than `_EXACT`: its canonical form
    (a subclass of one), `_ANY` (may equal a scalar), or None (never does)."""
    if isinstance(value, _NEVER_SCALAR):
        return None
    form = canonical(value)
    return _ANY if form is None else form


def metadata_index(key: IndexKey, metadata: Mapping[str, Any]) -> tuple[str, ...]:
    """The index entries of a checkpoint's metadata: the key id, then one
    digest per indexed pair (sorted, so equal metadata gives equal entries)."""
    signature = tuple(
        [
            (n, t, v) if (t := type(v)) in _EXACT else (n, bytes, _odd_form(v))
            for n, v in metadata.items()
            if n not in NOT_INDEXED
        ]
    )
    found = key.cache.get(signature)
    if found is not None:
        return found
    entries = {key.key_id}
    for name, kind, value in signature:
        form = value if kind is bytes else canonical(value)
        if type(name) is str and form is not None:
            entries.add(key.digest(name, form))
    result = tuple(sorted(entries))
    if len(key.cache) >= _CACHE_SIZE:
        key.cache.clear()
    key.cache[signature] = result
    return result


def index_query(key: IndexKey, filter: Mapping[str, Any] | None) -> IndexQuery | None:
    """What to ask the stores' thread index for `filter`; None when no pair
    of it is indexed (the listing then visits every thread)."""
    options: list[tuple[str, ...]] = []
    for name, value in (filter or {}).items():
        form = canonical(value)
        if name in NOT_INDEXED or form is None:
            continue
        options.append((key.digest(name, form), key.digest(name, _ANY)))
    return IndexQuery(key.key_id, tuple(options)) if options else None


class ThreadIndexKey:
    """The saver's index key: `PLAIN`, or under `EncryptedSerializer` the
    store's secret, fetched once (one store call) and then kept."""

    def __init__(self, serde: SerializerProtocol, store: CheckpointStore) -> None:
        self.serde = serde
        self.store = store
        self._key: IndexKey | None = (
            None if isinstance(serde, EncryptedSerializer) else PLAIN
        )

    def get(self) -> Op[IndexKey]:
        """The key (made and stored on first use under encryption)."""
        if self._key is not None:
            return self._key
        fresh = self.serde.dumps_typed(os.urandom(32).hex())
        stored = yield from self.store.index_secret(fresh)
        try:
            secret = bytes.fromhex(str(self.serde.loads_typed(stored)))
        except Exception as exc:
            raise InvalidConfigError(
                "the thread index secret cannot be decrypted with this "
                "serializer: every process sharing the store must use the same "
                f"encryption key ({type(exc).__name__}: {exc})"
            ) from exc
        self._key = IndexKey.of(secret)
        return self._key


__all__ = [
    "NOT_INDEXED",
    "PLAIN",
    "IndexKey",
    "ThreadIndexKey",
    "canonical",
    "index_query",
    "metadata_index",
]
