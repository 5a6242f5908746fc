"""The chdb HTTP front behaves like ClickHouse for everything the archive uses.

Each behaviour runs through both ``clickhouse_connect.get_client`` (sync) and
``get_async_client``, over the real HTTP transport. With ``CLICKHOUSE_URL`` set
the same checks run against that server instead (tests that stop the server or
need its credentials then use a front of their own).
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.asyncclient import AsyncClient
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from tests.servers_clickhouse import ClickHouseServer, external_clickhouse_url

ALL_BYTES = bytes(range(256))
PAYLOADS = [
    ALL_BYTES,
    ALL_BYTES[::-1] * 3,
    b"\n\n",
    b"head\n\ntail\r\n\r\n",
    b"",
    b"\x00" * 17,
    "snowman ☃ and emoji 🎉".encode(),
    random.Random(7).randbytes(70_000),
]
TRICKY_TEXT = 'it\'s a \\ backslash, a "quote", a\nnewline, a\ttab and ☃'


def _dsn(request: pytest.FixtureRequest) -> str:
    """The server under test: ``CLICKHOUSE_URL``, else the session's front."""
    external = external_clickhouse_url()
    if external:
        return external
    server: ClickHouseServer = request.getfixturevalue("clickhouse_server")
    return server.dsn


def _sync_client(dsn: str, **kwargs: Any) -> Client:
    return clickhouse_connect.get_client(
        dsn=dsn, autogenerate_session_id=False, **kwargs
    )


@pytest.fixture
def database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database, dropped afterwards, so tests never see each other's tables."""
    name = f"front_{uuid.uuid4().hex[:12]}"
    admin = _sync_client(_dsn(request))
    admin.command(f"CREATE DATABASE IF NOT EXISTS {name}")
    try:
        yield name
    finally:
        admin.command(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


class Both:
    """The sync or the async client behind one awaitable interface."""

    def __init__(
        self, sync: Client | None = None, aio: AsyncClient | None = None
    ) -> None:
        self.sync = sync
        self.aio = aio

    async def command(self, sql: str, **kwargs: Any) -> Any:
        if self.sync is not None:
            return self.sync.command(sql, **kwargs)
        assert self.aio is not None
        return await self.aio.command(sql, **kwargs)

    async def query(self, sql: str, **kwargs: Any) -> Any:
        if self.sync is not None:
            return self.sync.query(sql, **kwargs)
        assert self.aio is not None
        return await self.aio.query(sql, **kwargs)

    async def rows(self, sql: str, **kwargs: Any) -> list[tuple[Any, ...]]:
        return list((await self.query(sql, **kwargs)).result_rows)

    async def insert(
        self, table: str, rows: Sequence[Sequence[Any]], **kwargs: Any
    ) -> Any:
        if self.sync is not None:
            return self.sync.insert(table, rows, **kwargs)
        assert self.aio is not None
        return await self.aio.insert(table, rows, **kwargs)

    async def ping(self) -> bool:
        if self.sync is not None:
            return self.sync.ping()
        assert self.aio is not None
        return await self.aio.ping()


async def _connect(kind: str, dsn: str, **kwargs: Any) -> Both:
    if kind == "sync":
        return Both(sync=_sync_client(dsn, **kwargs))
    return Both(aio=await clickhouse_connect.get_async_client(dsn=dsn, **kwargs))


async def _close(client: Both) -> None:
    if client.sync is not None:
        client.sync.close()
    if client.aio is not None:
        await client.aio.close()


@pytest.fixture(params=["sync", "async"])
async def ch(request: pytest.FixtureRequest, database: str) -> AsyncIterator[Both]:
    """A client of each kind, on the test's own database."""
    client = await _connect(request.param, _dsn(request), database=database)
    try:
        yield client
    finally:
        await _close(client)


CHECKPOINTS_DDL = """
CREATE TABLE IF NOT EXISTS checkpoints (
    thread String,
    checkpoint_id String,
    version UInt64,
    payload String
) ENGINE = ReplacingMergeTree(version) ORDER BY (thread, checkpoint_id)
"""


async def test_ping_answers(ch: Both) -> None:
    assert await ch.ping() is True


async def test_create_if_not_exists_is_idempotent(ch: Both, database: str) -> None:
    for _ in range(2):
        await ch.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        await ch.command(CHECKPOINTS_DDL)
    tables = await ch.rows(
        "SELECT name, engine FROM system.tables WHERE database = currentDatabase()"
    )
    assert tables == [("checkpoints", "ReplacingMergeTree")]


async def test_replacing_merge_tree_final_keeps_one_row_per_key(ch: Both) -> None:
    await ch.command(CHECKPOINTS_DDL)
    columns = ["thread", "checkpoint_id", "version", "payload"]
    rows = [["t1", "c1", 1, "a"], ["t1", "c2", 1, "b"], ["t2", "c1", 1, "c"]]
    await ch.insert("checkpoints", rows, column_names=columns)
    await ch.insert("checkpoints", rows, column_names=columns)
    await ch.insert("checkpoints", [["t1", "c1", 2, "newer"]], column_names=columns)
    final = await ch.rows(
        "SELECT thread, checkpoint_id, version, payload FROM checkpoints FINAL "
        "ORDER BY thread, checkpoint_id"
    )
    assert final == [
        ("t1", "c1", 2, "newer"),
        ("t1", "c2", 1, "b"),
        ("t2", "c1", 1, "c"),
    ]
    assert await ch.command("SELECT count() FROM checkpoints") == 7


async def test_binary_string_payloads_round_trip_byte_for_byte(ch: Both) -> None:
    await ch.command(CHECKPOINTS_DDL)
    rows = [["t", f"c{i:02}", 1, payload] for i, payload in enumerate(PAYLOADS)]
    await ch.insert(
        "checkpoints",
        rows,
        column_names=["thread", "checkpoint_id", "version", "payload"],
    )
    result = await ch.rows(
        "SELECT checkpoint_id, payload FROM checkpoints FINAL ORDER BY checkpoint_id",
        column_formats={"payload": "bytes"},
    )
    assert [payload for _, payload in result] == PAYLOADS
    aggregated = await ch.rows(
        "SELECT checkpoint_id, any(payload) AS payload FROM checkpoints "
        "GROUP BY checkpoint_id ORDER BY checkpoint_id",
        column_formats={"payload": "bytes"},
    )
    assert [payload for _, payload in aggregated] == PAYLOADS


async def test_thousand_row_batch_insert_lands_whole(ch: Both) -> None:
    await ch.command(CHECKPOINTS_DDL)
    rows = [["batch", f"c{i:04}", i, f"payload {i}\n\n".encode()] for i in range(1000)]
    summary = await ch.insert(
        "checkpoints",
        rows,
        column_names=["thread", "checkpoint_id", "version", "payload"],
    )
    assert summary.written_rows == 1000
    assert await ch.rows(
        "SELECT count(), sum(version), uniqExact(payload) FROM checkpoints"
    ) == [(1000, sum(range(1000)), 1000)]


@pytest.mark.parametrize(
    "value", [TRICKY_TEXT, TRICKY_TEXT * 300], ids=["short", "over-4KiB"]
)
async def test_bound_parameters_carry_any_text(ch: Both, value: str) -> None:
    await ch.command(CHECKPOINTS_DDL)
    await ch.insert(
        "checkpoints",
        [[value, "c1", 1, b"x"], ["other", "c1", 1, b"y"]],
        column_names=["thread", "checkpoint_id", "version", "payload"],
    )
    echoed = await ch.rows("SELECT {thread:String}", parameters={"thread": value})
    assert echoed == [(value,)]
    matched = await ch.rows(
        "SELECT thread, checkpoint_id FROM checkpoints FINAL "
        "WHERE thread = {thread:String}",
        parameters={"thread": value},
    )
    assert matched == [(value, "c1")]


async def test_map_array_nullable_datetime64_and_64_bit_integers_round_trip(
    ch: Both,
) -> None:
    await ch.command(
        """
        CREATE TABLE IF NOT EXISTS typed (
            id UInt64,
            delta Int64,
            metadata Map(String, String),
            tags Array(String),
            parent Nullable(String),
            created DateTime64(6, 'UTC')
        ) ENGINE = MergeTree ORDER BY id
        """
    )
    now = datetime.now(timezone.utc).replace(microsecond=123456)
    rows = [
        [
            2**64 - 1,
            -(2**63),
            {"source": "loop", "it's": "a\nb"},
            ["x", "", "y\\z"],
            None,
            now,
        ],
        [0, 2**63 - 1, {}, [], "parent-1", now - timedelta(days=1, microseconds=1)],
    ]
    await ch.insert(
        "typed",
        rows,
        column_names=["id", "delta", "metadata", "tags", "parent", "created"],
    )
    query = (
        "SELECT id, delta, metadata, tags, parent, created FROM typed ORDER BY id DESC"
    )
    aware = await ch.rows(query, tz_mode="aware")
    assert [list(row) for row in aware] == rows
    naive = await ch.rows(query)
    assert [row[5] for row in naive] == [row[5].replace(tzinfo=None) for row in rows]


async def test_lightweight_and_mutation_deletes_remove_rows_at_once(ch: Both) -> None:
    await ch.command(CHECKPOINTS_DDL)
    rows = [[f"t{i % 3}", f"c{i}", 1, b"p"] for i in range(30)]
    await ch.insert(
        "checkpoints",
        rows,
        column_names=["thread", "checkpoint_id", "version", "payload"],
    )
    await ch.command(
        "DELETE FROM checkpoints WHERE thread = {thread:String}",
        parameters={"thread": "t0"},
        settings={"mutations_sync": 2},
    )
    assert await ch.rows("SELECT DISTINCT thread FROM checkpoints ORDER BY thread") == [
        ("t1",),
        ("t2",),
    ]
    await ch.command(
        "ALTER TABLE checkpoints DELETE WHERE thread = {thread:String}",
        parameters={"thread": "t1"},
        settings={"mutations_sync": 2},
    )
    assert await ch.rows("SELECT thread, count() FROM checkpoints GROUP BY thread") == [
        ("t2", 10)
    ]


async def test_settings_apply_to_their_own_query_only(ch: Both) -> None:
    query = "SELECT getSetting('max_threads'), getSetting('mutations_sync')"
    default = await ch.rows(query)
    for _ in range(3):
        assert await ch.rows(
            query, settings={"max_threads": 1, "mutations_sync": 2}
        ) == [(1, 2)]
    assert await ch.rows(query) == default


async def test_command_returns_rows_for_select_and_a_summary_for_ddl(ch: Both) -> None:
    assert await ch.command("SELECT 41 + 1") == 42
    assert await ch.command("SELECT 'a', 'b'") == ["a", "b"]
    summary = await ch.command(CHECKPOINTS_DDL)
    assert not isinstance(summary, (str, int, list))


async def test_syntax_error_raises_database_error_with_its_code(ch: Both) -> None:
    with pytest.raises(DatabaseError) as caught:
        await ch.query("SELEC 1")
    assert caught.value.code == 62
    assert "SYNTAX_ERROR" in str(caught.value)


async def test_unknown_table_and_database_raise_clickhouse_codes(ch: Both) -> None:
    with pytest.raises(DatabaseError) as table:
        await ch.query("SELECT * FROM no_such_table")
    assert table.value.code == 60
    with pytest.raises(DatabaseError) as db:
        await ch.command("SELECT * FROM no_such_database.t")
    assert db.value.code == 81


async def test_failed_insert_is_reported_and_stores_nothing(ch: Both) -> None:
    await ch.command(
        "CREATE TABLE IF NOT EXISTS checked (n Int64, CONSTRAINT positive CHECK n > 0) "
        "ENGINE = MergeTree ORDER BY n"
    )
    with pytest.raises(DatabaseError) as caught:
        await ch.insert("checked", [[1], [-1]], column_names=["n"])
    assert caught.value.code == 469
    assert await ch.command("SELECT count() FROM checked") == 0


async def test_concurrent_inserts_all_land(ch: Both) -> None:
    await ch.command(CHECKPOINTS_DDL)
    columns = ["thread", "checkpoint_id", "version", "payload"]

    def rows(i: int) -> list[list[Any]]:
        return [[f"t{i}", f"c{j}", 1, bytes([i]) * 100] for j in range(50)]

    if ch.sync is not None:
        sync = ch.sync
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: sync.insert("checkpoints", rows(i), column_names=columns),
                    range(16),
                )
            )
    else:
        assert ch.aio is not None
        aio = ch.aio
        await asyncio.gather(
            *(
                aio.insert("checkpoints", rows(i), column_names=columns)
                for i in range(16)
            )
        )
    assert await ch.rows("SELECT count(), uniqExact(thread) FROM checkpoints") == [
        (800, 16)
    ]


@pytest.mark.parametrize("compress", ["lz4", "zstd", "gzip", False])
async def test_inserts_arrive_intact_with_any_request_compression(
    request: pytest.FixtureRequest, database: str, compress: str | bool
) -> None:
    for kind in ("sync", "async"):
        client = await _connect(
            kind, _dsn(request), database=database, compress=compress
        )
        try:
            await client.command(CHECKPOINTS_DDL)
            rows = [[kind, f"c{i}", 1, payload] for i, payload in enumerate(PAYLOADS)]
            await client.insert(
                "checkpoints",
                rows,
                column_names=["thread", "checkpoint_id", "version", "payload"],
            )
            result = await client.rows(
                "SELECT payload FROM checkpoints WHERE thread = {kind:String} "
                "ORDER BY checkpoint_id",
                parameters={"kind": kind},
                column_formats={"payload": "bytes"},
            )
            assert [payload for (payload,) in result] == PAYLOADS
        finally:
            await _close(client)


async def test_session_keeps_temporary_tables_between_requests(
    request: pytest.FixtureRequest,
) -> None:
    client = clickhouse_connect.get_client(dsn=_dsn(request))
    try:
        client.command("CREATE TEMPORARY TABLE scratch (n UInt8)")
        client.insert("scratch", [[1], [2]], column_names=["n"])
        assert client.command("SELECT sum(n) FROM scratch") == 3
    finally:
        client.close()


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[ClickHouseServer]:
    """A front of the test's own, with a password, that the test may stop."""
    with ClickHouseServer(
        tmp_path / "data", user="archive", password="s3cret 'pw'"
    ) as server:
        yield server


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_wrong_password_is_reported_as_authentication_failure(
    private_server: ClickHouseServer, kind: str
) -> None:
    good = await _connect(kind, private_server.dsn)
    try:
        assert await good.command("SELECT currentUser() != ''") == 1
    finally:
        await _close(good)
    kwargs = {**private_server.client_kwargs(), "password": "wrong"}
    with pytest.raises(DatabaseError) as caught:
        if kind == "sync":
            clickhouse_connect.get_client(autogenerate_session_id=False, **kwargs)
        else:
            await clickhouse_connect.get_async_client(**kwargs)
    assert caught.value.code == 516
    assert "Authentication failed" in str(caught.value)


async def test_outage_fails_with_connection_error_and_restart_keeps_data(
    private_server: ClickHouseServer,
) -> None:
    sync = Both(sync=_sync_client(private_server.dsn))
    aio = Both(aio=await clickhouse_connect.get_async_client(dsn=private_server.dsn))
    try:
        await sync.command(CHECKPOINTS_DDL)
        await sync.insert(
            "checkpoints",
            [["t", "c1", 1, ALL_BYTES]],
            column_names=["thread", "checkpoint_id", "version", "payload"],
        )
        port = private_server.port
        private_server.stop()
        for client in (sync, aio):
            with pytest.raises(OperationalError):
                await client.query("SELECT count() FROM checkpoints")
        private_server.start()
        assert private_server.port == port
        for client in (sync, aio):
            assert await client.rows(
                "SELECT thread, payload FROM checkpoints FINAL",
                column_formats={"payload": "bytes"},
            ) == [("t", ALL_BYTES)]
        assert await aio.ping() is True
    finally:
        await _close(sync)
        await _close(aio)


def test_restart_on_the_same_data_dir_keeps_tables(tmp_path: Path) -> None:
    server = ClickHouseServer(tmp_path / "data")
    try:
        server.start()
        client = _sync_client(server.dsn)
        client.command("CREATE TABLE kept (n UInt64) ENGINE = MergeTree ORDER BY n")
        client.insert("kept", [[7]], column_names=["n"])
        client.close()
        server.restart()
        client = _sync_client(server.dsn)
        assert client.command("SELECT sum(n) FROM kept") == 7
        client.close()
    finally:
        server.close()
    assert os.path.isdir(tmp_path / "data"), (
        "a data dir the caller gave is never removed"
    )
