"""The `aiecs-checkpoint` command line (also `python -m aiecs_checkpoint`).

Every command takes the store options (`--url`, `--prefix`, `--saver`), `--json`
(machine-readable output on stdout) and `--debug` (a traceback on errors). An
error is one line on stderr and exit code 1; usage errors exit 2; `health`
exits 3 when the engine is degraded.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from langgraph.checkpoint.base import CheckpointTuple
from rich.progress import Progress

from aiecs_checkpoint._version import __version__
from aiecs_checkpoint.cli import inspect, migrate, render, storage
from aiecs_checkpoint.errors import (
    AiecsCheckpointError,
    BlockedTypeError,
    CorruptDataError,
    InvalidConfigError,
    InvalidExportError,
    StoreError,
)
from aiecs_checkpoint.saver import ContextEngineSaver
from aiecs_checkpoint.stores import portable

F = TypeVar("F", bound=Callable[..., Any])

DEGRADED_EXIT = 3
"""Exit code of `health` when the engine is degraded."""

PAGE = 200
"""Threads per `list_threads` call when a command walks every thread."""


class CommandError(AiecsCheckpointError):
    """A command cannot do what it was asked (missing thread, existing thread)."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, CorruptDataError) and not isinstance(exc, BlockedTypeError):
        return (
            f"cannot decode stored values ({text}): they were written with another "
            "serializer (encrypted?); pass --saver MODULE:ATTR naming a saver built "
            "with it. export, import, prune and delete need no key"
        )
    if isinstance(exc, AiecsCheckpointError):
        return text
    return f"{type(exc).__name__}: {text} (run with --debug for the traceback)"


class _Command(click.Command):
    """A command whose failures print one line (a traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(_one_line(exc)) from None


def store_options(func: F) -> F:
    """The options every command shares."""
    options = [
        click.option(
            "--url",
            metavar="URL",
            help="Redis URL (redis://, rediss://, unix://); default: REDIS_URL, "
            "else REDIS_HOST/REDIS_PORT/REDIS_DB/REDIS_PASSWORD.",
        ),
        click.option("--prefix", metavar="PREFIX", help="Key prefix (default aiecs)."),
        click.option(
            "--saver",
            "saver_ref",
            metavar="MODULE:ATTR",
            help="Use the ContextEngineSaver (or ContextEngine) your code builds, "
            "e.g. myapp.graph:saver (custom serde, encryption).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout."),
        click.option("--debug", is_flag=True, help="Show tracebacks on errors."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@contextmanager
def _saver(opts: dict[str, Any]) -> Iterator[ContextEngineSaver]:
    saver = storage.open_saver(opts["url"], opts["prefix"], opts["saver_ref"])
    with saver:
        yield saver


def _opts(kwargs: dict[str, Any]) -> dict[str, Any]:
    keys = ("url", "prefix", "saver_ref", "as_json", "debug")
    return {k: kwargs.pop(k) for k in keys}


def command(name: str | None = None, **attrs: Any) -> Callable[[F], F]:
    """A subcommand of `cli` with the shared options; the body gets `opts`."""

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def run(**kwargs: Any) -> Any:
            return func(_opts(kwargs), **kwargs)

        made = cli.command(name, cls=_Command, **attrs)(store_options(run))
        return made  # type: ignore[return-value]

    return wrap


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aiecs-checkpoint")
def cli() -> None:
    """Inspect, export, import and clean up aiecs-checkpoint threads.

    The store comes from --url / --prefix, --saver MODULE:ATTR, or the
    library's environment (REDIS_URL, REDIS_HOST..., CLICKHOUSE_ENABLED...).
    """


def _config(thread_id: str, ns: str | None, checkpoint_id: str | None = None) -> Any:
    conf: dict[str, Any] = {"thread_id": thread_id}
    if ns is not None:
        conf["checkpoint_ns"] = ns
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def _where(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--where")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


# -- threads ---------------------------------------------------------------------


def _thread_info(info: Any) -> dict[str, Any]:
    return {
        "thread_id": info.thread_id,
        "checkpoint_id": info.checkpoint_id,
        "checkpoint_ns": info.checkpoint_ns,
        "created_at": info.created_at.isoformat(),
        "updated_at": info.updated_at.isoformat(),
        "step": info.step,
        "metadata": inspect.jsonable(info.metadata),
    }


@command(short_help="List threads, newest activity first.")
@click.option(
    "--where",
    multiple=True,
    metavar="KEY=VALUE",
    help="Keep threads whose latest metadata has KEY equal to VALUE (JSON if it "
    "parses, e.g. step=3, else text); repeatable. Keys other than step and "
    "source (e.g. user_id) are indexed for scalar values: such a filter reads "
    "only the matching threads.",
)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--before", metavar="CURSOR", help="The cursor a previous page printed.")
def threads(
    opts: dict[str, Any], where: tuple[str, ...], limit: int, before: str | None
) -> None:
    """List threads (id, latest checkpoint time, step, metadata), a page at a time."""
    filter = _where(where)
    with _saver(opts) as saver:
        page = saver.list_threads(filter=filter or None, limit=limit, before=before)
    data = [_thread_info(i) for i in page]
    cursor = page[-1].cursor if len(page) == limit else None
    if opts["as_json"]:
        render.print_json({"threads": data, "next_cursor": cursor})
    else:
        render.threads(render.console(), data, cursor)


# -- history ---------------------------------------------------------------------


def _ns_option(func: F) -> F:
    return click.option(
        "--ns",
        default="",
        metavar="NS",
        help="Checkpoint namespace (a subgraph's, as history --ns '*' lists); "
        "default: the root graph.",
    )(func)


def _parent(
    saver: ContextEngineSaver, tup: CheckpointTuple, known: dict[str, CheckpointTuple]
) -> CheckpointTuple | None:
    parent = tup.parent_config
    if not parent:
        return None
    pid = parent["configurable"].get("checkpoint_id")
    if pid in known:
        return known[pid]
    return saver.get_tuple(parent)


@command(short_help="A thread's checkpoints, newest first.")
@click.argument("thread_id")
@_ns_option
@click.option("--limit", type=click.IntRange(min=1), default=None)
def history(opts: dict[str, Any], thread_id: str, ns: str, limit: int | None) -> None:
    """THREAD_ID's checkpoints newest first: id, parent, step, source, the nodes
    that wrote each one, time. --ns '*' lists every namespace."""
    all_ns = ns == "*"
    with _saver(opts) as saver:
        found = list(
            saver.list(_config(thread_id, None if all_ns else ns), limit=limit)
        )
        if not found:
            where = "" if all_ns or not ns else f" in namespace {ns!r}"
            raise CommandError(f"thread {thread_id!r} has no checkpoints{where}")
        known = {t.config["configurable"]["checkpoint_id"]: t for t in found}
        rows = [inspect.summary(t, _parent(saver, t, known)) for t in found]
    if opts["as_json"]:
        render.print_json({"thread_id": thread_id, "checkpoints": rows})
    else:
        render.history(render.console(), rows, all_ns)


# -- show ------------------------------------------------------------------------


LATEST = "latest"


def _get(
    saver: ContextEngineSaver, thread_id: str, ns: str, ref: str | None
) -> CheckpointTuple:
    """The checkpoint `ref` names: an id, `latest` (or None), or `latest~N`
    (the Nth before the latest in the namespace's history)."""
    back = 0
    if ref is not None and (ref == LATEST or ref.startswith(LATEST + "~")):
        steps = ref[len(LATEST) + 1 :] if ref != LATEST else "0"
        if not steps.isdigit():
            raise click.BadParameter(f"{ref!r}: use latest~N with N a number")
        back, ref = int(steps), None
    tup: CheckpointTuple | None
    if back:
        found = list(saver.list(_config(thread_id, ns), limit=back + 1))
        tup = found[back] if len(found) > back else None
    else:
        tup = saver.get_tuple(_config(thread_id, ns, ref))
    if tup is None:
        what = f"checkpoint {ref!r}" if ref else f"checkpoint {LATEST}~{back}"
        where = f" in namespace {ns!r}" if ns else ""
        if not back and not ref:
            raise CommandError(f"thread {thread_id!r} has no checkpoints{where}")
        raise CommandError(f"thread {thread_id!r} has no {what}{where}")
    return tup


def _from_graph(saver: ContextEngineSaver, ref: str, tup: CheckpointTuple) -> Any:
    graph = storage.load_object(ref, "--graph")
    compile_ = getattr(graph, "compile", None)
    if callable(compile_) and not hasattr(graph, "get_state"):
        graph = compile_(checkpointer=saver)
    elif hasattr(graph, "copy") and hasattr(graph, "get_state"):
        graph = graph.copy(update={"checkpointer": saver})
    else:
        raise InvalidConfigError(
            f"--graph {ref!r} is a {type(graph).__name__}, not a StateGraph or a "
            "compiled graph"
        )
    return graph.get_state(tup.config)


@command(short_help="A checkpoint's values, pending writes, next nodes, interrupts.")
@click.argument("thread_id")
@click.argument("checkpoint_id", required=False)
@_ns_option
@click.option("--full", is_flag=True, help="Print values whole, not truncated.")
@click.option(
    "--graph",
    "graph_ref",
    metavar="MODULE:ATTR",
    help="Your graph (StateGraph or compiled): next nodes and interrupts come "
    "from graph.get_state instead of being read off the checkpoint.",
)
def show(
    opts: dict[str, Any],
    thread_id: str,
    checkpoint_id: str | None,
    ns: str,
    full: bool,
    graph_ref: str | None,
) -> None:
    """Show checkpoint CHECKPOINT_ID of THREAD_ID (an id, latest, or latest~N;
    default latest): channel values,
    pending writes, next nodes, interrupts, and the thread's TaskContext (model
    usage summed by model, file operations)."""
    with _saver(opts) as saver:
        tup = _get(saver, thread_id, ns, checkpoint_id)
        parent = _parent(saver, tup, {})
        cid = tup.config["configurable"]["checkpoint_id"]
        if graph_ref is not None:
            state = _from_graph(saver, graph_ref, tup)
            next_nodes = list(state.next)
            interrupts = [
                {"task_id": t.id, "id": i.id, "value": inspect.jsonable(i.value)}
                for t in state.tasks
                for i in t.interrupts
            ]
        else:
            writes = storage.stored_writes(saver, thread_id, ns, cid)
            live = checkpoint_id in (None, LATEST)
            next_nodes = inspect.next_nodes(tup.checkpoint, writes, live)
            interrupts = inspect.interrupts(tup)
        context = inspect.task_context(saver.get_task_context(thread_id))
    data = {
        "thread_id": thread_id,
        "checkpoint": inspect.summary(tup, parent),
        "metadata": inspect.jsonable(tup.metadata),
        "values": inspect.channel_values(tup),
        "next": next_nodes,
        "interrupts": interrupts,
        "pending_writes": inspect.pending_writes(tup),
        "task_context": context,
    }
    if opts["as_json"]:
        render.print_json(data)
    else:
        render.show(render.console(), data, full)


# -- diff ------------------------------------------------------------------------


@command(short_help="What changed between two checkpoints.")
@click.argument("thread_id")
@click.argument("first")
@click.argument("second")
@_ns_option
@click.option("--full", is_flag=True, help="Print values whole, not truncated.")
def diff(
    opts: dict[str, Any], thread_id: str, first: str, second: str, ns: str, full: bool
) -> None:
    """Show what changed in THREAD_ID's channel values from checkpoint FIRST to
    checkpoint SECOND (each an id, latest, or latest~N: N before the latest)."""
    with _saver(opts) as saver:
        a = _get(saver, thread_id, ns, first)
        b = _get(saver, thread_id, ns, second)
    data = {
        "thread_id": thread_id,
        "from": inspect.summary(a, None),
        "to": inspect.summary(b, None),
        "changes": inspect.diff_values(
            inspect.channel_values(a), inspect.channel_values(b)
        ),
    }
    if opts["as_json"]:
        render.print_json(data)
    else:
        render.diff(render.console(), data, full)


# -- export ----------------------------------------------------------------------


def _all_threads(saver: ContextEngineSaver, filter: dict[str, Any]) -> list[str]:
    ids: list[str] = []
    before = None
    while True:
        page = saver.list_threads(filter=filter or None, limit=PAGE, before=before)
        ids += [i.thread_id for i in page]
        if len(page) < PAGE:
            return ids
        before = page[-1]


def _progress(total: int) -> Progress:
    """A progress bar on stderr, shown on a terminal for more than one thread."""
    err = render.console(stderr=True)
    return Progress(
        console=err, transient=True, disable=total < 2 or not err.is_terminal
    )


@contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    """stdout, or a file written whole or not at all (renamed when complete)."""
    if path is None:
        yield sys.stdout
        return
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            yield out
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dump(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"


@command("export", short_help="Write threads to a portable JSON Lines file.")
@click.argument("thread_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Export every thread.")
@click.option("--where", multiple=True, metavar="KEY=VALUE", help="As in threads.")
@click.option(
    "-o", "--output", metavar="FILE", help="Write FILE (atomically) instead of stdout."
)
def export(
    opts: dict[str, Any],
    thread_ids: tuple[str, ...],
    everything: bool,
    where: tuple[str, ...],
    output: str | None,
) -> None:
    """Export THREAD_IDS (or --all / --where) as JSON Lines: a versioned,
    storage-level copy (ids, parents, metadata, values, pending writes, tracking
    records) that `import` restores exactly. Values stay as stored, so
    encrypted values stay encrypted."""
    if bool(thread_ids) == (everything or bool(where)):
        raise click.UsageError("give thread ids, or --all / --where, not both")
    with _saver(opts) as saver:
        ids = list(thread_ids) or _all_threads(saver, _where(where))
        if not ids:
            raise CommandError("no thread matches: nothing to export")
        checkpoints = 0
        with _output(output) as out, _progress(len(ids)) as progress:
            task = progress.add_task("exporting", total=len(ids))
            out.write(_dump(portable.header(f"aiecs-checkpoint {__version__}")))
            for thread_id in ids:
                thread = storage.export_thread(saver, thread_id)
                if not thread:
                    raise CommandError(f"thread {thread_id!r} has no checkpoints")
                checkpoints += sum(len(ns.ids) for ns in thread.values())
                out.write(_dump(portable.thread_line(thread_id, thread)))
                progress.advance(task)
            out.write(_dump(portable.end_line(len(ids))))
    if output is not None:
        summary = {"threads": len(ids), "checkpoints": checkpoints, "file": output}
        if opts["as_json"]:
            render.print_json(summary)
        else:
            click.echo(
                f"exported {len(ids)} thread(s), {checkpoints} checkpoint(s) "
                f"to {output}"
            )


# -- import ----------------------------------------------------------------------


def _lines(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except ValueError as exc:
                raise InvalidExportError(
                    f"{path}: line {number} is not JSON ({exc})"
                ) from exc


def _threads_in(path: Path) -> Iterator[tuple[str, Any]]:
    """The file's threads, checked line by line; the end line must close it."""
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        raise InvalidExportError(f"{path}: empty file")
    portable.check_header(first[1])
    count, ended = 0, False
    for number, data in lines:
        if ended:
            raise InvalidExportError(f"{path}: line {number} follows the end line")
        parsed = portable.parse_line(data, number)
        if isinstance(parsed, int):
            if parsed != count:
                raise InvalidExportError(
                    f"{path}: the end line counts {parsed} threads, "
                    f"the file has {count}"
                )
            ended = True
            continue
        count += 1
        yield parsed
    if not ended:
        raise InvalidExportError(f"{path}: no end line: the file is truncated")


def _check_targets(
    saver: ContextEngineSaver, ids: Sequence[str], replace: bool
) -> None:
    existing = [t for t in ids if storage.thread_exists(saver, t)]
    if existing and not replace:
        shown = ", ".join(repr(t) for t in existing[:5])
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        raise CommandError(
            f"thread {shown}{more} already exists: nothing imported "
            "(pass --replace to overwrite)"
        )


def _selected(ids: Sequence[str], only: Sequence[str], where: str) -> list[str]:
    missing = [t for t in only if t not in ids]
    if missing:
        raise CommandError(f"{where} has no thread {missing[0]!r}: nothing imported")
    return [t for t in ids if not only or t in only]


@command("import", short_help="Import threads from an export file or another saver.")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--from",
    "source",
    metavar="SOURCE",
    help="Copy threads out of another LangGraph saver: sqlite:PATH, "
    "postgresql://..., or MODULE:ATTR naming a saver.",
)
@click.option(
    "--thread", "only", multiple=True, metavar="ID", help="Only these threads."
)
@click.option("--replace", is_flag=True, help="Overwrite threads that exist.")
def import_(
    opts: dict[str, Any],
    file: str | None,
    source: str | None,
    only: tuple[str, ...],
    replace: bool,
) -> None:
    """Import the threads of FILE (made by `export`), or of --from SOURCE.

    The whole file is checked before anything is written; threads that already
    exist are refused unless --replace."""
    if (file is None) == (source is None):
        raise click.UsageError("give an export FILE or --from SOURCE (one of them)")
    if file is not None:
        summary = _import_file(opts, Path(file), only, replace)
    else:
        assert source is not None
        summary = _import_saver(opts, source, only, replace)
    if opts["as_json"]:
        render.print_json(summary)
    else:
        click.echo(
            f"imported {len(summary['threads'])} thread(s), "
            f"{summary['checkpoints']} checkpoint(s)"
        )


def _import_file(
    opts: dict[str, Any], path: Path, only: Sequence[str], replace: bool
) -> dict[str, Any]:
    if not path.is_file():
        raise CommandError(f"no file {str(path)!r}")
    ids: list[str] = []
    for thread_id, _ in _threads_in(path):
        if thread_id in ids:
            raise InvalidExportError(f"{path}: thread {thread_id!r} appears twice")
        ids.append(thread_id)
    wanted = _selected(ids, only, str(path))
    checkpoints = 0
    with _saver(opts) as saver:
        _check_targets(saver, wanted, replace)
        with _progress(len(wanted)) as progress:
            task = progress.add_task("importing", total=len(wanted))
            for thread_id, thread in _threads_in(path):
                if thread_id in wanted:
                    storage.import_thread(saver, thread_id, thread)
                    checkpoints += sum(len(ns.ids) for ns in thread.values())
                    progress.advance(task)
    return {"threads": wanted, "checkpoints": checkpoints, "source": str(path)}


def _import_saver(
    opts: dict[str, Any], source: str, only: Sequence[str], replace: bool
) -> dict[str, Any]:
    checkpoints = 0
    with migrate.open_source(source) as src, _saver(opts) as saver:
        wanted = _selected(migrate.source_threads(src), only, source)
        _check_targets(saver, wanted, replace)
        with _progress(len(wanted)) as progress:
            task = progress.add_task("importing", total=len(wanted))
            for thread_id in wanted:
                tuples = migrate.read_thread(src, thread_id)
                if replace:
                    saver.delete_thread(thread_id)
                try:
                    checkpoints += migrate.write_thread(saver, thread_id, tuples)
                except BaseException:
                    saver.delete_thread(thread_id)
                    raise
                progress.advance(task)
    return {"threads": wanted, "checkpoints": checkpoints, "source": source}


# -- prune / delete --------------------------------------------------------------


def _confirm(question: str, yes: bool) -> None:
    if not yes:
        click.confirm(question, abort=True, err=True)


def _existing(saver: ContextEngineSaver, thread_ids: Sequence[str]) -> None:
    for t in thread_ids:
        if not storage.thread_exists(saver, t):
            raise CommandError(f"thread {t!r} has no checkpoints: nothing changed")


@command(short_help="Drop old checkpoints (keep the latest) or whole threads.")
@click.argument("thread_ids", nargs=-1, required=True)
@click.option(
    "--strategy",
    type=click.Choice(["keep_latest", "delete"]),
    default="keep_latest",
    show_default=True,
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def prune(
    opts: dict[str, Any], thread_ids: tuple[str, ...], strategy: str, yes: bool
) -> None:
    """Prune THREAD_IDS: keep only each namespace's latest checkpoint (its
    state unchanged), or delete the threads."""
    what = (
        "keep only the latest checkpoint of"
        if strategy == "keep_latest"
        else ("delete")
    )
    with _saver(opts) as saver:
        _existing(saver, thread_ids)
        _confirm(f"Prune: {what} {len(thread_ids)} thread(s)?", yes)
        saver.prune(list(thread_ids), strategy=strategy)
    _done(opts, "pruned", thread_ids)


@command(short_help="Delete threads.")
@click.argument("thread_ids", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def delete(opts: dict[str, Any], thread_ids: tuple[str, ...], yes: bool) -> None:
    """Delete THREAD_IDS: every checkpoint, value, write and record."""
    with _saver(opts) as saver:
        _existing(saver, thread_ids)
        _confirm(f"Delete {len(thread_ids)} thread(s) for good?", yes)
        for t in thread_ids:
            saver.delete_thread(t)
    _done(opts, "deleted", thread_ids)


def _done(opts: dict[str, Any], verb: str, thread_ids: Sequence[str]) -> None:
    if opts["as_json"]:
        render.print_json({verb: list(thread_ids)})
    else:
        click.echo(f"{verb} {len(thread_ids)} thread(s)")


# -- health ----------------------------------------------------------------------


@command(short_help="The engine's health check and metrics.")
def health(opts: dict[str, Any]) -> None:
    """Print the engine's health check and metrics; exit 3 when degraded."""
    saver = storage.open_saver(opts["url"], opts["prefix"], opts["saver_ref"])
    engine = saver.engine
    try:
        try:
            engine.connect()
        except StoreError:
            pass  # the health check below reports it
        report = engine.health_check_sync()
        metrics = None
        if report["status"] == "healthy" or "total_checkpoints" in report:
            try:
                metrics = engine.get_metrics_snapshot()
            except StoreError:
                metrics = None
    finally:
        engine.close_sync()
    data = inspect.jsonable({"health": report, "metrics": metrics})
    if opts["as_json"]:
        render.print_json(data)
    else:
        render.health(render.console(), data)
    if report["status"] != "healthy":
        raise click.exceptions.Exit(DEGRADED_EXIT)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script and of `python -m aiecs_checkpoint`."""
    cli.main(
        args=list(argv) if argv is not None else None, prog_name="aiecs-checkpoint"
    )


__all__ = ["CommandError", "cli", "main"]
