"""Session tracking for graph runs (`ContextEngineSaver(track_sessions=True)`).

The engine session whose id is the thread id follows the thread's runs. The
saver runs the hooks below after each store operation succeeded. Each hook is
one store operation (`on_put`, `on_writes`: what to report, built by the pure
helpers below, then the domain-store operations it needs), which the saver
runs with the engine's sync or async runner; sync and async therefore cannot
behave differently.

Design decisions:

* Session. Created by the first put of the thread (`session_id` = thread id,
  status "active"), with user id `configurable["user_id"]`, else the checkpoint
  metadata's `user_id` (LangGraph's metadata merged with the run config's
  `metadata` and `configurable`), else "anonymous". A session that exists keeps
  its user id. Creation happens inside the tracking step itself, so a session
  deleted or expired meanwhile is simply created again.

* Run (one request). LangGraph 1.x puts no run id into checkpoint metadata on
  its own (only `ExecutionInfo.run_id`, "None when `run_id` is not provided in
  the RunnableConfig"). A run is therefore one invocation of the graph
  (`invoke`/`stream`/`ainvoke`..., including a `Command(resume=...)`), recognised
  in this process by the run-scoped `RunControl` LangGraph puts in every
  put/put_writes config of that invocation (subgraphs share it). Its run key is
  `id:<digest of the run id>` when the caller gave one (metadata / configurable
  `run_id`, as LangGraph Server does, or the config's top-level `run_id`), else
  a random `local:<hex>`. As in the checkpoint store's run index, store keys
  hold digests; run and message ids appear only inside serialized values.
  Puts with neither a run control nor a run id (`update_state`, direct
  `saver.put` calls) are not requests: they create the session if needed and
  record activity only.

* Counting once. The store keeps a run mark per run key with the session
  (`RunMark`, written in the same atomic step: one Lua script on Redis, one
  lock in memory), and applies each report at most once per key: the request
  is counted on the first report of a key, the error on the first failed
  report. Retried store calls and concurrent hooks therefore never double
  count; across processes, runs that carry a run id are counted once however
  many processes report them (and a re-entry with the same run id after a
  restart is not a new request). A `local:` run is only ever seen by the one
  process running it. The newest `RUNS_KEPT` marks are kept per session.

* Processing time. Each report carries the seconds since the run's first hook
  in this process; the store adds only the part above the largest value the
  run reported so far. A run's time is thus the wall time between its first
  and last checkpoint (or error write) as one process saw it, and N runs total
  about the sum of their durations. Not counted: work before the first put
  (loading state) and after the last one, so runs saved only at exit
  (`durability="exit"`) report about zero, and time spent in another process
  under the same run id (re-entry) is not added to what the first one saw.
  Only a process executing the run (holding LangGraph's run control) reports
  time: a put that merely carries a run id (a replay, a copy saved by another
  process) counts the run once and adds no time.

* Status. "active" from the first report of a run (running, interrupted or
  succeeded); "failed" once a run wrote an `__error__` (error count +1 once per
  run); the next run sets "active" again. "completed" and "expired" stay the
  application's to set (`end_session`); a later run makes the session active.
  An `__error__` write outside any run (no run control, no run id: a direct
  `put_writes` call, such as re-saving stored writes) is not a run failure and
  changes nothing, as a direct put is not a request.

* Mirroring (`mirror_messages=True`). LangGraph saves node writes before the
  `add_messages` reducer gives messages their ids (verified with 1.2: writes to
  a `MessagesState` channel carry `id=None`), so writes cannot name messages
  the way the state does. Messages are therefore mirrored from each root
  namespace checkpoint's `messages` channel: every message whose id the
  conversation has not had yet is appended, in state order (role from the
  message type, text content, metadata with the message id, type, checkpoint
  id and step). The append is keyed by message id in the store (a set of id
  digests per conversation, checked in the same script and never trimmed, so
  the newest-N cap of the history does not let an old message back in), so
  resumes, replays, re-saved checkpoints or writes and other processes append
  nothing twice. A message without an id (a `messages` channel without
  `add_messages`) is keyed by its position and a digest of its text. Subgraph
  namespaces are not mirrored: what they return reaches the root state. Not
  mirrored: `messages` channels whose values are not in checkpoints
  (`DeltaChannel`). Appended messages are archived like
  `add_conversation_message`'s.

* Failures. Tracking runs after the checkpoint or writes were stored, so it
  never corrupts or loses them. If the session store fails, the store's typed
  `StoreError` propagates from put/put_writes like any storage failure:
  LangGraph fails the run, whose state stays intact (the checkpoint was saved
  first), so the caller sees the outage and can retry. Swallowing it would
  silently drop requests, errors and messages. (On Redis both stores share
  one server, so a domain failure right after a successful checkpoint write
  is the same outage anyway.)

* Cost. Memory: a dict update under one lock per hook. Redis: one script call
  per put (the session step and the mirrored messages together), plus one
  `SMISMEMBER` the first time this process mirrors a thread (then the mirrored
  ids are cached per thread); put_writes costs nothing except for `__error__`
  writes (one script call). On a cluster the session indexes (other slots)
  are refreshed in separate calls only when the script says they would go
  stale (see `redis_domain_layout`).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    Checkpoint,
    CheckpointMetadata,
    get_checkpoint_metadata,
)

from aiecs_checkpoint.domain.models import MESSAGE_ROLES, ConversationMessage
from aiecs_checkpoint.engine import ContextEngine
from aiecs_checkpoint.engine.domain_api import check_text, now_us
from aiecs_checkpoint.stores.domain_records import RunUpdate, SessionRecord, Tracked
from aiecs_checkpoint.stores.ops import Op
from aiecs_checkpoint.stores.records import Typed, random_id

ERROR = "__error__"
"""The channel of a failed task's write (`langgraph.constants.ERROR`)."""

MESSAGES = "messages"
"""The channel mirrored into the conversation history."""

ANONYMOUS = "anonymous"
"""User id of a session whose run names none."""

RUNTIME_KEY = "__pregel_runtime"
"""Where LangGraph keeps the run's `Runtime` (with its `RunControl`) in a config."""

RUNS_CACHED = 16_384
"""Runs this process remembers (least recently reported dropped first). A run
dropped while still going is counted again unless it carries a run id."""

THREADS_CACHED = 256
"""Threads whose mirrored message ids this process remembers."""

_ROLES: Mapping[str, str] = {
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
    "system": "system",
    "developer": "system",
}


# -- pure helpers ------------------------------------------------------------------


def run_id_of(config: RunnableConfig, metadata: Mapping[str, Any]) -> str | None:
    """The caller's run id: metadata / configurable `run_id`, else the config's."""
    run_id = metadata.get("run_id")
    if run_id is None or run_id == "":
        run_id = config.get("run_id")
    return None if run_id is None or run_id == "" else str(run_id)


def run_control(config: RunnableConfig) -> object | None:
    """LangGraph's run-scoped control object (one per invocation), if any."""
    runtime = (config.get("configurable") or {}).get(RUNTIME_KEY)
    control: object | None = getattr(runtime, "control", None)
    return control


def user_of(config: RunnableConfig, metadata: Mapping[str, Any]) -> str:
    """`configurable["user_id"]`, else `metadata["user_id"]`, else anonymous;
    `InvalidConfigError` for a user id that is not valid Unicode text (Redis
    keys and the archive take UTF-8 only)."""
    for source in (config.get("configurable") or {}, metadata):
        user_id = source.get("user_id")
        if isinstance(user_id, str) and user_id:
            return check_text("user_id", user_id)
    return ANONYMOUS


def role_of(message: BaseMessage) -> str | None:
    """The conversation role of a message (None for non-messages like removals)."""
    kind = message.type
    if kind.endswith("MessageChunk"):
        kind = kind.removesuffix("MessageChunk").lower()
    if kind == "chat":
        role = str(getattr(message, "role", ""))
        return _ROLES.get(role, role if role in MESSAGE_ROLES else "assistant")
    return _ROLES.get(kind)


def message_key(message: BaseMessage, position: int) -> str:
    """The id a message is mirrored under: its own, else position + text digest."""
    if isinstance(message.id, str) and message.id:
        return message.id
    digest = hashlib.blake2b(
        f"{message.type}\0{message.text}".encode(), digest_size=8
    ).hexdigest()
    return f"#{position}:{digest}"


def digest(text: str) -> str:
    """What the store keeps of a run or message id (as `stores.records.run_key`)."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def channel_messages(checkpoint: Checkpoint) -> Sequence[Any]:
    """The items of the checkpoint's `messages` channel (empty without one)."""
    value = checkpoint.get("channel_values", {}).get(MESSAGES)
    if value is None:
        return ()
    return value if isinstance(value, (list, tuple)) else (value,)


def mirror_candidates(
    items: Sequence[Any], start: int = 0
) -> list[tuple[str, BaseMessage]]:
    """(key, message) of every message in `items[start:]` (keys by position in
    `items`)."""
    out: list[tuple[str, BaseMessage]] = []
    for position in range(start, len(items)):
        message = _message(items[position])
        if message is not None and role_of(message) is not None:
            out.append((message_key(message, position), message))
    return out


def key_at(items: Sequence[Any], position: int) -> str | None:
    """The key of the item at `position` (None when it is no message)."""
    message = _message(items[position])
    return None if message is None else message_key(message, position)


def _message(item: Any) -> BaseMessage | None:
    return item if isinstance(item, BaseMessage) else _coerce(item)


def _coerce(item: Any) -> BaseMessage | None:
    try:
        return convert_to_messages([item])[0]
    except Exception:
        return None


def conversation_message(
    key: str,
    message: BaseMessage,
    checkpoint: Checkpoint,
    metadata: Mapping[str, Any],
    when: datetime,
) -> ConversationMessage:
    """How a state message is recorded in the conversation history."""
    extra: dict[str, Any] = {
        "message_id": key,
        "message_type": message.type,
        "checkpoint_id": checkpoint["id"],
        "step": metadata.get("step"),
    }
    if message.name:
        extra["name"] = message.name
    tool_call_id = getattr(message, "tool_call_id", None)
    if tool_call_id:
        extra["tool_call_id"] = tool_call_id
    role = role_of(message)
    assert role is not None
    return ConversationMessage(
        role=role, content=str(message.text), timestamp=when, metadata=extra
    )


def new_session(
    thread_id: str, config: RunnableConfig, metadata: Mapping[str, Any], at_us: int
) -> SessionRecord:
    """The session a thread's first tracked operation creates."""
    return SessionRecord(
        session_id=thread_id,
        user_id=user_of(config, metadata),
        status="active",
        created_us=at_us,
        activity_us=at_us,
    )


def has_error(writes: Sequence[tuple[str, Any]]) -> bool:
    """Whether a task's writes record its failure."""
    return any(channel == ERROR for channel, _ in writes)


@dataclass(slots=True)
class _Run:
    """A run this process has reported: its key, control object and start."""

    key: str
    control: object | None
    started: float


@dataclass(slots=True)
class _Mirrored:
    """What this process knows is mirrored of a thread: the message keys, and
    how many leading messages of its last put (ending with key `last`)."""

    keys: set[str]
    count: int = 0
    last: str | None = None


class SessionTracker:
    """Keeps the engine session whose id is the thread id in step with runs."""

    def __init__(self, engine: ContextEngine, *, mirror_messages: bool) -> None:
        self.engine = engine
        self.mirror_messages = mirror_messages
        self._lock = threading.Lock()
        self._runs: OrderedDict[tuple[str, object], _Run] = OrderedDict()
        self._mirrored: OrderedDict[str, _Mirrored] = OrderedDict()

    # -- hooks (operations the saver runs after its own) ---------------------------

    def check(self, config: RunnableConfig, metadata: CheckpointMetadata) -> None:
        """Raise, before the saver stores anything, what the hooks would raise
        on this config (a user id no store can keep)."""
        user_of(config, get_checkpoint_metadata(config, metadata))

    def on_put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
    ) -> Op[None]:
        """Report the run's progress (and mirror new messages) after a put."""
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        md = get_checkpoint_metadata(config, metadata)
        update = self._report(thread_id, config, md, failed=False)
        items: Sequence[Any] = ()
        if self.mirror_messages and not conf.get("checkpoint_ns"):
            items = channel_messages(checkpoint)
        start = self._mirrored_prefix(thread_id, items) if items else 0
        candidates = mirror_candidates(items, start)
        blobs: dict[str, Typed] = {}
        keys = [key for key, _ in candidates]
        if candidates:
            unknown = self._unmirrored(thread_id, keys)
            if unknown is None:
                stored = {key: digest(key) for key in keys}
                known = yield from self.engine.domain.known_message_ids(
                    thread_id, list(stored.values())
                )
                unknown = [key for key in keys if stored[key] not in known]
            fresh = set(unknown)
            when = datetime.now(timezone.utc)
            for key, message in candidates:
                if key in fresh:
                    fresh.discard(key)
                    record = conversation_message(key, message, checkpoint, md, when)
                    blobs[digest(key)] = self.engine._conversation_blob(record)
        new = new_session(thread_id, config, md, update.activity_us)
        cap = self.engine.max_conversation_messages
        tracked = yield from self.engine.domain.track_run(
            thread_id, new, update, list(blobs.items()), cap
        )
        if items:
            self._remember(thread_id, keys, items)
        self._archive(thread_id, tracked, blobs)

    def on_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]]
    ) -> Op[None]:
        """Count the run's error when a task's writes record its failure."""
        if not has_error(writes):
            return
        thread_id = str(config["configurable"]["thread_id"])
        md = get_checkpoint_metadata(config, {})
        update = self._report(thread_id, config, md, failed=True)
        if update.run_key is None:
            return
        new = new_session(thread_id, config, md, update.activity_us)
        cap = self.engine.max_conversation_messages
        tracked = yield from self.engine.domain.track_run(
            thread_id, new, update, [], cap
        )
        self._archive(thread_id, tracked, {})

    def _report(
        self,
        thread_id: str,
        config: RunnableConfig,
        metadata: Mapping[str, Any],
        *,
        failed: bool,
    ) -> RunUpdate:
        """What this hook reports about its run (no run key outside any run)."""
        activity = now_us()
        explicit = run_id_of(config, metadata)
        control = run_control(config)
        if control is None and explicit is None:
            return RunUpdate(activity)
        ident: tuple[str, object] = (
            (thread_id, id(control)) if control is not None else (thread_id, explicit)
        )
        now = time.monotonic()
        with self._lock:
            run = self._runs.get(ident)
            if run is None or run.control is not control:
                key = f"id:{digest(explicit)}" if explicit else f"local:{random_id()}"
                run = self._runs[ident] = _Run(key, control, now)
                self._runs.move_to_end(ident)
                while len(self._runs) > RUNS_CACHED:
                    self._runs.popitem(last=False)
            else:
                self._runs.move_to_end(ident)
        # Only a process executing the run (it holds the run's control object)
        # measures its processing time; a put that merely carries a run id
        # (a replay, another process saving the same data) counts the run but
        # adds no time, since its clock says nothing about the run.
        elapsed = now - run.started if control is not None else 0.0
        return RunUpdate(activity, run.key, elapsed, failed)

    # -- per-process caches ----------------------------------------------------------

    def _mirrored_prefix(self, thread_id: str, items: Sequence[Any]) -> int:
        """How many leading `items` are known to be mirrored: the count of the
        last put when its last message is still in place (`add_messages` only
        appends, replaces in place or removes), else 0 (a full scan)."""
        with self._lock:
            entry = self._mirrored.get(thread_id)
            count, last = (entry.count, entry.last) if entry else (0, None)
        if 0 < count <= len(items) and key_at(items, count - 1) == last:
            return count
        return 0

    def _unmirrored(self, thread_id: str, keys: Sequence[str]) -> list[str] | None:
        """Message keys not mirrored yet as far as this process knows (None:
        the thread is not cached). The cache holds the keys themselves, so a
        put digests only its new messages."""
        with self._lock:
            entry = self._mirrored.get(thread_id)
            if entry is None:
                return None
            self._mirrored.move_to_end(thread_id)
            return [key for key in keys if key not in entry.keys]

    def _remember(
        self, thread_id: str, keys: Sequence[str], items: Sequence[Any]
    ) -> None:
        last = key_at(items, len(items) - 1)
        with self._lock:
            entry = self._mirrored.get(thread_id)
            if entry is None:
                entry = self._mirrored[thread_id] = _Mirrored(set())
            entry.keys.update(keys)
            entry.count, entry.last = len(items), last
            self._mirrored.move_to_end(thread_id)
            while len(self._mirrored) > THREADS_CACHED:
                self._mirrored.popitem(last=False)

    def _archive(
        self, thread_id: str, tracked: Tracked, blobs: Mapping[str, Typed]
    ) -> None:
        self.engine._archive_tracked(thread_id, tracked, blobs)
