"""export / import / prune / delete through the CLI (a subprocess) on Redis,
checked through the saver: histories identical, graphs resuming to the end."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

from aiecs_checkpoint import ContextEngineSaver
from tests.cli import graphs
from tests.cli.conftest import MEMORY, cli, cli_all, fresh_prefix, redis_saver
from tests.conftest import redis_url

Store = tuple[list[str], ContextEngineSaver]


def payloads(path: Path) -> list[bytes]:
    """Every serialized value of an export file, base64-decoded."""
    out: list[bytes] = []

    def walk(node: Any) -> None:
        if (
            isinstance(node, list)
            and len(node) == 2
            and all(isinstance(x, str) for x in node)
        ):
            try:
                out.append(base64.b64decode(node[1], validate=True))
            except ValueError:
                pass
        if isinstance(node, list):
            for x in node:
                walk(x)
        elif isinstance(node, dict):
            for x in node.values():
                walk(x)

    for line in path.read_text().splitlines()[1:]:
        walk(json.loads(line))
    return out


def test_export_delete_import_restores_identical_history_and_resumes_to_the_end(
    redis_store: Store, tmp_path: Path
) -> None:
    args, saver = redis_store
    before = {t: graphs.history(saver, t) for t in ("approval", "ticket-2")}
    records = saver.get_task_context("approval").model_tracker
    file = tmp_path / "threads.jsonl"
    export = cli("export", "approval", "ticket-2", *args, "-o", str(file))
    assert export.code == 0, export.err
    assert "exported 2 thread(s), 8 checkpoint(s)" in export.out
    lines = file.read_text().splitlines()
    header = json.loads(lines[0])
    assert (header["format"], header["version"]) == ("aiecs-checkpoint-export", 1)
    assert json.loads(lines[-1]) == {"kind": "end", "threads": 2}

    deleted = cli("delete", "approval", "ticket-2", *args, "--yes")
    assert deleted.code == 0, deleted.err
    assert graphs.history(saver, "approval") == []

    imported = cli("import", str(file), *args, "--json")
    assert imported.code == 0, imported.err
    assert imported.json()["threads"] == ["approval", "ticket-2"]
    after = {t: graphs.history(saver, t) for t in ("approval", "ticket-2")}
    assert after == before
    assert saver.get_task_context("approval").model_tracker == records
    listed = [i.thread_id for i in saver.list_threads(filter={"user_id": "u1"})]
    assert listed[:2] == ["approval", "ticket-4"]  # its place in the listing kept

    final = graphs.resume(saver)
    assert final["log"] == ["agent", "answer yes", "done"]
    assert graphs.history(saver, "approval")[0][1] == ()


def test_import_refuses_existing_threads_and_bad_files_without_writing(
    redis_store: Store, tmp_path: Path
) -> None:
    args, saver = redis_store
    good = tmp_path / "good.jsonl"
    assert cli("export", "ticket-1", "ticket-3", *args, "-o", str(good)).code == 0
    lines = good.read_text().splitlines()
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text("\n".join(lines[:-1]) + "\n")
    broken = tmp_path / "broken.jsonl"
    thread = json.loads(lines[2])
    thread["namespaces"][0]["checkpoints"][0]["checkpoint"] = ["msgpack", "not b64!"]
    broken.write_text("\n".join([lines[0], lines[1], json.dumps(thread), lines[3]]))
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({**json.loads(lines[0]), "version": 99}) + "\n")
    saver.delete_thread("ticket-1")
    saver.delete_thread("ticket-3")
    assert cli("import", str(good), *args).code == 0  # ticket-1 and -3 back

    exists, cut, bad, future = cli_all(
        ["import", str(good), *args],
        ["import", str(truncated), *args, "--replace"],
        ["import", str(broken), *args, "--replace"],
        ["import", str(newer), *args],
    )
    assert exists.code == 1
    assert "already exists: nothing imported (pass --replace" in exists.err
    assert cut.code == 1 and "truncated" in cut.err
    assert bad.code == 1 and "line 3" in bad.err and "base64" in bad.err
    assert future.code == 1 and "version 99 is not supported" in future.err
    for result in (exists, cut, bad, future):
        assert len(result.err.strip().splitlines()) == 1
    # The broken file's first thread (ticket-1) was valid: nothing was written.
    saver.delete_thread("ticket-1")
    assert cli("import", str(broken), *args).code == 1
    assert graphs.history(saver, "ticket-1") == []


def test_prune_and_delete_ask_first_and_yes_skips_the_question(
    redis_store: Store,
) -> None:
    args, saver = redis_store
    state = graphs.build(saver).get_state(graphs.config("ticket-0")).values
    declined = cli("prune", "ticket-0", *args, input="n\n")
    assert declined.code == 1 and "Aborted" in declined.err
    assert "Prune: keep only the latest checkpoint of 1 thread(s)?" in declined.err
    assert len(graphs.history(saver, "ticket-0")) == 5

    confirmed = cli("prune", "ticket-0", *args, input="y\n")
    assert confirmed.code == 0, confirmed.err
    assert len(graphs.history(saver, "ticket-0")) == 1
    assert graphs.build(saver).get_state(graphs.config("ticket-0")).values == state

    yes, no_delete = cli_all(
        ["prune", "ticket-1", *args, "--yes", "--json"],
        ["delete", "ticket-2", *args],  # no answer on stdin: aborted
    )
    assert yes.code == 0 and yes.json() == {"pruned": ["ticket-1"]}
    assert "?" not in yes.err
    assert len(graphs.history(saver, "ticket-1")) == 1
    assert no_delete.code == 1 and len(graphs.history(saver, "ticket-2")) == 5

    gone = cli("prune", "no-such-thread", "ticket-3", *args, "--yes")
    assert gone.code == 1 and "'no-such-thread' has no checkpoints" in gone.err
    assert len(graphs.history(saver, "ticket-3")) == 5


def test_encrypted_export_holds_no_plaintext_and_imports_elsewhere_without_the_key(
    tmp_path: Path,
) -> None:
    key = os.urandom(32)
    serde = EncryptedSerializer.from_pycryptodome_aes(key=key)
    source, target, unencrypted = fresh_prefix(), fresh_prefix(), fresh_prefix()
    encrypted = redis_saver(source, serde=serde)
    plain = redis_saver(unencrypted)
    graphs.populate(encrypted)
    graphs.populate(plain)
    secret, control = tmp_path / "secret.jsonl", tmp_path / "plain.jsonl"
    url = redis_url()
    ran = cli_all(
        ["export", "approval", "--url", url, "--prefix", source, "-o", str(secret)],
        [
            "export",
            "approval",
            "--url",
            url,
            "--prefix",
            unencrypted,
            "-o",
            str(control),
        ],
    )
    assert all(r.code == 0 for r in ran), [r.err for r in ran]
    marker = graphs.MARKER.encode()
    assert any(marker in p for p in payloads(control))  # the check can see it
    assert not any(marker in p for p in payloads(secret))
    assert graphs.MARKER not in secret.read_text()

    imported = cli("import", str(secret), "--url", url, "--prefix", target)
    assert imported.code == 0, imported.err
    copy = redis_saver(target, serde=serde)
    assert graphs.history(copy, "approval") == graphs.history(encrypted, "approval")
    assert graphs.resume(copy)["log"] == ["agent", "answer yes", "done"]
    keyless = cli("show", "approval", "--url", url, "--prefix", target)
    assert keyless.code == 1 and len(keyless.err.strip().splitlines()) == 1
    assert "--saver MODULE:ATTR" in keyless.err


def test_memory_store_threads_move_to_redis_and_resume(tmp_path: Path) -> None:
    file = tmp_path / "memory.jsonl"
    export = cli("export", "--all", *MEMORY, "-o", str(file), "--json")
    assert export.code == 0, export.err
    assert export.json()["threads"] == 6
    prefix = fresh_prefix()
    imported = cli("import", str(file), "--url", redis_url(), "--prefix", prefix)
    assert imported.code == 0, imported.err
    saver = redis_saver(prefix)
    listed = [i.thread_id for i in saver.list_threads()]
    assert listed == ["approval", *reversed(graphs.TICKETS)]
    assert graphs.resume(saver)["log"] == ["agent", "answer yes", "done"]
    usage = saver.get_task_context("approval").model_tracker
    assert [u["input_tokens"] for u in usage] == [42]


@pytest.mark.parametrize("where", [["--where", "user_id=u2"]])
def test_export_to_stdout_selects_threads_by_metadata(where: list[str]) -> None:
    done = cli("export", *where, *MEMORY)
    assert done.code == 0, done.err
    lines = [json.loads(x) for x in done.out.splitlines()]
    assert [x["thread_id"] for x in lines[1:-1]] == ["ticket-3", "ticket-1"]
