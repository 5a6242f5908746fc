"""Start and stop real Redis servers for the test suite.

The servers are ordinary ``redis-server`` child processes listening on free
``127.0.0.1`` ports, each with its own temporary working directory and with
persistence disabled. Nothing here depends on pytest or redis-py: readiness is
checked with a tiny RESP client over a plain socket.

Typical use (for example inside a pytest fixture)::

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        ...
        server.stop()   # simulate an outage
        server.start()  # ... and recover, on the same port

    with RedisCluster() as cluster:
        nodes = [ClusterNode(host, port) for host, port in cluster.startup_nodes]
        client = redis.cluster.RedisCluster(startup_nodes=nodes)

Fault injection (the fault tests in ``tests/faults``)::

    with PersistentRedisServer() as server:  # AOF, appendfsync always
        ...
        server.kill()    # kill -9: a crash, the data dir stays
        server.start()   # same port, same data (the AOF is replayed)
        server.pause()   # SIGSTOP: connections hang, nothing is refused
        server.resume()  # SIGCONT

    with RedisCluster(replicas=1) as cluster:  # 3 masters, 3 replicas
        killed = cluster.kill_master(0)
        cluster.wait_for_failover(killed)  # its replica now serves the slots

The binaries come from the Debian packages ``redis-server`` and
``redis-tools``; a clear :class:`RuntimeError` is raised when they are missing.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO
from urllib.parse import quote

__all__ = [
    "HOST",
    "ClusterNodeInfo",
    "PersistentRedisServer",
    "RedisCluster",
    "RedisServer",
    "RedisServerError",
    "find_free_port",
]

HOST = "127.0.0.1"
"""Interface every server binds to."""

_LOG_TAIL_CHARS = 4000
_STOP_TIMEOUT = 10.0
_POLL_INTERVAL = 0.02
_MAX_PORT = 65535
_CLUSTER_BUS_OFFSET = 10000  # Redis listens on port + 10000 for the cluster bus
_MIN_CLUSTER_MASTERS = 3
_SLOTS = 16384


class RedisServerError(RuntimeError):
    """A Redis server (or cluster) failed to start, answer or form."""


def find_free_port() -> int:
    """Return a TCP port on ``127.0.0.1`` that is free right now.

    The port is only probed, not reserved, so another process may take it
    before the caller binds it; :class:`RedisServer` retries on a new port
    when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _find_cluster_port() -> int:
    """Return a free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        port = find_free_port()
        bus_port = port + _CLUSTER_BUS_OFFSET
        if bus_port <= _MAX_PORT and _port_is_free(bus_port):
            return port
    raise RedisServerError("could not find a free port pair for a cluster node")


def _flags(**options: str) -> list[str]:
    """``_flags(cluster_enabled="yes")`` -> ``["--cluster-enabled", "yes"]``."""
    argv: list[str] = []
    for name, value in options.items():
        argv += ["--" + name.replace("_", "-"), value]
    return argv


def _require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        package = "redis-server" if name == "redis-server" else "redis-tools"
        raise RuntimeError(
            f"`{name}` was not found on PATH. The tests need a real Redis: "
            f"install the Debian package `{package}` "
            "(`apt-get install -y redis-server redis-tools`)."
        )
    return path


# --------------------------------------------------------------------------
# Minimal RESP client, enough for AUTH / PING / CLUSTER INFO.
# --------------------------------------------------------------------------


class _RespError(Exception):
    """The server answered with a RESP error reply."""


def _encode_command(args: Sequence[str]) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read_reply(stream: IO[bytes]) -> str | int | None:
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed by the server")
    kind, payload = line[:1], line[1:-2].decode()
    if kind == b"+":
        return payload
    if kind == b"-":
        raise _RespError(payload)
    if kind == b":":
        return int(payload)
    if kind == b"$":
        length = int(payload)
        if length < 0:
            return None
        return stream.read(length + 2)[:-2].decode()
    raise ConnectionError(f"unexpected RESP reply: {line!r}")


def _command(
    port: int,
    *args: str,
    password: str | None = None,
    timeout: float = 1.0,
) -> str | int | None:
    """Send one command (after AUTH, if a password is given) and return its reply."""
    connection = socket.create_connection((HOST, port), timeout=timeout)
    with connection as sock, sock.makefile("rb") as stream:
        if password is not None:
            sock.sendall(_encode_command(["AUTH", password]))
            _read_reply(stream)
        sock.sendall(_encode_command(args))
        return _read_reply(stream)


# --------------------------------------------------------------------------
# Safety net: stop servers still running when the interpreter exits.
# --------------------------------------------------------------------------

_live_servers: set[RedisServer] = set()


@atexit.register
def _stop_leftover_servers() -> None:
    for server in list(_live_servers):
        server.stop()


class RedisServer:
    """One standalone ``redis-server`` process on a free ``127.0.0.1`` port.

    The server starts on construction unless ``autostart=False``. It keeps its
    port across :meth:`stop` / :meth:`start` / :meth:`restart`, so clients
    built from :attr:`url` reconnect after an outage. Data does not survive a
    restart (persistence is off and each start uses a fresh temp dir).

    Args:
        port: Port to listen on; a free one is chosen when omitted.
        password: Sets ``--requirepass``; it is then embedded in :attr:`url`.
        extra_args: Additional ``redis-server`` command line arguments.
        startup_timeout: Seconds to wait for the server to answer PING.
        autostart: Start immediately (default) or wait for :meth:`start`.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        password: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 10.0,
        autostart: bool = True,
    ) -> None:
        self._binary = _require_binary("redis-server")
        self._port_was_given = port is not None
        self._port = port if port is not None else find_free_port()
        self.password = password
        self.extra_args: tuple[str, ...] = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._tmpdir: Path | None = None
        self._has_started = False
        self._paused = False
        if autostart:
            self.start()

    # -- public properties --------------------------------------------------

    host: str = HOST
    """Interface the server listens on (always ``127.0.0.1``)."""

    @property
    def port(self) -> int:
        """TCP port of the server."""
        return self._port

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0`` for ``Redis.from_url``."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self._port}/0"

    @property
    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def tmpdir(self) -> Path | None:
        """Working directory of the running server (``None`` when stopped)."""
        return self._tmpdir

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> RedisServer:
        """Start the server and block until it answers PING.

        Raises:
            RedisServerError: if the process exits early or does not answer
                within ``startup_timeout``; the message includes its log.
        """
        if self.is_running:
            message = f"redis-server on port {self._port} is already running"
            raise RedisServerError(message)
        # A port picked by find_free_port() may be grabbed by someone else
        # before redis binds it: pick another one, but only before the first
        # successful start (afterwards the port must stay stable).
        attempts = 1 if (self._port_was_given or self._has_started) else 3
        for attempt in range(1, attempts + 1):
            try:
                self._spawn()
                self._wait_until_ready()
            except BaseException as error:
                port_taken = "Address already in use" in self._log_tail()
                self.stop()
                retry = port_taken and attempt < attempts
                if retry and isinstance(error, RedisServerError):
                    self._port = find_free_port()
                    continue
                raise
            break
        self._has_started = True
        _live_servers.add(self)
        return self

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL) and remove its temp dir.

        Safe to call more than once.
        """
        process, self._process = self._process, None
        if process is not None and self._paused and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM
        self._paused = False
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        _live_servers.discard(self)

    def restart(self) -> RedisServer:
        """Stop the server and start it again on the same port."""
        self.stop()
        return self.start()

    # -- fault injection ------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Process id of the running server (``None`` when stopped)."""
        return self._process.pid if self._process is not None else None

    @property
    def is_paused(self) -> bool:
        """Whether the server is stopped by :meth:`pause` (SIGSTOP)."""
        return self._paused and self.is_running

    def kill(self) -> None:
        """Crash the server with SIGKILL (``kill -9``): no shutdown, no final
        save. The port is kept for :meth:`start`; a :class:`PersistentRedisServer`
        keeps its data dir too."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()
        self._paused = False
        self.stop()

    def pause(self) -> None:
        """Freeze the server with SIGSTOP: it keeps its sockets, so connections
        and new connects succeed at the TCP level but no reply ever comes."""
        if not self.is_running:
            raise RedisServerError(f"redis-server on port {self._port} is not running")
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Undo :meth:`pause` (SIGCONT)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)
        self._paused = False

    def __enter__(self) -> RedisServer:
        if not self.is_running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self._port} {state}>"

    # -- helpers ------------------------------------------------------------

    def command(self, *args: str, timeout: float = 1.0) -> str | int | None:
        """Run one simple command (e.g. ``"PING"``) without redis-py.

        Supports status, error, integer and bulk string replies only.
        """
        return _command(self._port, *args, password=self.password, timeout=timeout)

    def log_output(self) -> str:
        """The server's log so far (empty when stopped)."""
        return self._log_tail(limit=None)

    def _argv(self, tmpdir: Path) -> list[str]:
        argv = [self._binary]
        argv += _flags(
            port=str(self._port),
            bind=HOST,
            save="",
            appendonly="no",
            dir=str(tmpdir),
            daemonize="no",
        )
        if self.password is not None:
            argv += _flags(requirepass=self.password)
        return argv + list(self.extra_args)

    def _spawn(self) -> None:
        self._tmpdir = Path(tempfile.mkdtemp(prefix=f"redis-{self._port}-"))
        self._log = open(self._tmpdir / "redis.log", "w+b")
        self._process = subprocess.Popen(
            self._argv(self._tmpdir),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C in the terminal reaches pytest, which then
            # stops the servers in order, instead of killing them mid-test.
            start_new_session=True,
        )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while True:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                raise RedisServerError(
                    f"redis-server on port {self._port} exited with code {code} "
                    f"during startup.\n{self._format_log()}"
                )
            try:
                if self.command("PING", timeout=0.5) == "PONG":
                    return
            except (OSError, _RespError) as error:
                last_error = error
            if time.monotonic() >= deadline:
                raise RedisServerError(
                    f"redis-server on port {self._port} did not answer PING within "
                    f"{self.startup_timeout:.1f}s (last error: {last_error!r}).\n"
                    f"{self._format_log()}"
                )
            time.sleep(_POLL_INTERVAL)

    def _log_tail(self, limit: int | None = _LOG_TAIL_CHARS) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        text = self._log.read().decode(errors="replace")
        return text if limit is None else text[-limit:]

    def _format_log(self) -> str:
        tail = self._log_tail().strip() or "(empty)"
        header = f"--- redis-server log (port {self._port}) ---"
        return f"{header}\n{tail}\n--- end of log ---"


class PersistentRedisServer(RedisServer):
    """A :class:`RedisServer` whose data survives a crash and a restart.

    The append-only file is on (``appendfsync`` ``always`` by default: a write is
    on disk before its reply leaves), in a data dir of its own that
    :meth:`stop` and :meth:`kill` keep, so :meth:`start` replays it on the same
    port. :meth:`close` (or leaving the ``with`` block) also removes the data
    dir when this object created it. With ``appendonly=False`` the server keeps
    only the snapshots it is told to take (``command("SAVE")``) and restarts
    from the last one: what it acknowledged after it is lost, as after a
    failover to a replica that lagged.

    Args:
        port: Port to listen on; a free one is chosen when omitted.
        data_dir: Where the AOF (or snapshot) lives; a fresh temp dir when omitted.
        appendfsync: ``always``, ``everysec`` or ``no``.
        appendonly: Keep the append-only file (default) or snapshots only.
        password, extra_args, startup_timeout, autostart: as :class:`RedisServer`.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        data_dir: str | Path | None = None,
        appendfsync: str = "always",
        appendonly: bool = True,
        password: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        autostart: bool = True,
    ) -> None:
        self.appendonly = appendonly
        self._owns_data_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="redis-data-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.appendfsync = appendfsync
        super().__init__(
            port,
            password=password,
            extra_args=extra_args,
            startup_timeout=startup_timeout,
            autostart=autostart,
        )

    def _argv(self, tmpdir: Path) -> list[str]:
        # Later flags win: persistence on, in the data dir (the log stays in tmpdir).
        return super()._argv(tmpdir) + _flags(
            dir=str(self.data_dir),
            appendonly="yes" if self.appendonly else "no",
            appendfsync=self.appendfsync,
        )

    def close(self) -> None:
        """Stop, and remove the data dir if this object created it."""
        self.stop()
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class ClusterNodeInfo:
    """One line of ``CLUSTER NODES``: a node as some node of the cluster sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        """Flagged ``fail`` (agreed by the masters) or ``fail?`` (suspected)."""
        return bool(self.flags & {"fail", "fail?"})

    def serves(self, slot: int) -> bool:
        return any(low <= slot <= high for low, high in self.slots)


def _parse_cluster_nodes(text: str) -> list[ClusterNodeInfo]:
    nodes: list[ClusterNodeInfo] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        address = fields[1].split("@")[0]
        slots: list[tuple[int, int]] = []
        for spec in fields[8:]:
            if spec.startswith("["):  # a slot being migrated
                continue
            low, _, high = spec.partition("-")
            slots.append((int(low), int(high or low)))
        nodes.append(
            ClusterNodeInfo(
                node_id=fields[0],
                port=int(address.rpartition(":")[2]),
                flags=frozenset(fields[2].split(",")),
                master_id=None if fields[3] == "-" else fields[3],
                slots=tuple(slots),
            )
        )
    return nodes


class RedisCluster:
    """A 3-master Redis Cluster (no replicas by default) on free ``127.0.0.1`` ports.

    Each node is a :class:`RedisServer` with cluster mode enabled and its own
    temp dir; the cluster is formed with ``redis-cli --cluster create`` and the
    constructor returns once every node reports ``cluster_state:ok`` (and, with
    replicas, once every replica's link to its master is up).

    Args:
        masters: Number of master nodes (Redis requires at least 3).
        startup_timeout: Seconds allowed for the cluster to reach state ok.
        node_timeout_ms: ``--cluster-node-timeout`` of each node.
        replicas: Replicas per master (``redis-cli --cluster-replicas``).
    """

    def __init__(
        self,
        masters: int = 3,
        *,
        startup_timeout: float = 30.0,
        node_timeout_ms: int = 2000,
        replicas: int = 0,
    ) -> None:
        if masters < _MIN_CLUSTER_MASTERS:
            raise ValueError("a Redis Cluster needs at least 3 masters")
        self._cli = _require_binary("redis-cli")
        _require_binary("redis-server")
        self.startup_timeout = startup_timeout
        self.node_timeout_ms = node_timeout_ms
        self.replicas = replicas
        self.nodes: list[RedisServer] = []
        self._served_before: dict[int, int] = {}
        try:
            for _ in range(masters * (1 + replicas)):
                port = _find_cluster_port()
                self.nodes.append(
                    RedisServer(
                        port,
                        extra_args=_flags(
                            cluster_enabled="yes",
                            cluster_config_file=f"nodes-{port}.conf",
                            cluster_node_timeout=str(node_timeout_ms),
                        ),
                    )
                )
            self._create()
            self._wait_until_ok()
            if replicas:
                self.wait_for_replicas_in_sync()
        except BaseException:
            self.stop()
            raise

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node, for ``ClusterNode(host, port)``."""
        return [(node.host, node.port) for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:P1`` (first node) for ``RedisCluster.from_url``."""
        return f"redis://{HOST}:{self.nodes[0].port}"

    def stop(self) -> None:
        """Stop every node and remove their temp dirs. Safe to call twice."""
        for node in self.nodes:
            node.stop()

    # -- topology and failover ------------------------------------------------

    @property
    def live_url(self) -> str:
        """``redis://127.0.0.1:P`` of the first running node (after a kill)."""
        return f"redis://{HOST}:{self._live_nodes()[0].port}"

    def _live_nodes(self) -> list[RedisServer]:
        live = [n for n in self.nodes if n.is_running and not n.is_paused]
        if not live:
            raise RedisServerError("no node of the cluster is running")
        return live

    def node_table(self, via: RedisServer | None = None) -> list[ClusterNodeInfo]:
        """``CLUSTER NODES`` as seen by `via` (the first running node by default)."""
        node = via or self._live_nodes()[0]
        return _parse_cluster_nodes(str(node.command("CLUSTER", "NODES")))

    def _by_port(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def masters(self) -> list[RedisServer]:
        """Running masters that serve slots, in the order of their first slot."""
        table = [
            n for n in self.node_table() if n.is_master and n.slots and not n.failed
        ]
        table.sort(key=lambda n: n.slots[0][0])
        return [self._by_port(n.port) for n in table]

    def replicas_of(self, master: RedisServer) -> list[RedisServer]:
        """The nodes replicating `master`."""
        table = self.node_table()
        me = next(n for n in table if n.port == master.port)
        return [
            self._by_port(n.port)
            for n in table
            if n.master_id == me.node_id and not n.failed
        ]

    def slot_of(self, key: str) -> int:
        """The hash slot of `key` (``CLUSTER KEYSLOT``)."""
        slot = self._live_nodes()[0].command("CLUSTER", "KEYSLOT", key)
        assert isinstance(slot, int)
        return slot

    def master_for_slot(self, slot: int) -> RedisServer:
        """The running master serving `slot`."""
        for n in self.node_table():
            if n.is_master and not n.failed and n.serves(slot):
                return self._by_port(n.port)
        raise RedisServerError(f"no running master serves slot {slot}")

    def kill_master(self, which: int | RedisServer = 0) -> RedisServer:
        """``kill -9`` a master (by its index in :meth:`masters`); returns it."""
        master = self.masters()[which] if isinstance(which, int) else which
        me = next(n for n in self.node_table() if n.port == master.port)
        self._served_before[master.port] = me.slots[0][0]
        master.kill()
        return master

    def add_replica(self, master: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Start a new node, join it to the cluster as a replica of `master`
        (as an operator replaces a lost node) and return it once its link to
        `master` is up."""
        port = _find_cluster_port()
        node = RedisServer(
            port,
            extra_args=_flags(
                cluster_enabled="yes",
                cluster_config_file=f"nodes-{port}.conf",
                cluster_node_timeout=str(self.node_timeout_ms),
            ),
        )
        self.nodes.append(node)
        master_id = next(
            n.node_id for n in self.node_table(master) if n.port == master.port
        )
        node.command("CLUSTER", "MEET", master.host, str(master.port))
        deadline = time.monotonic() + timeout
        replicating = False
        while True:
            try:
                if not replicating:
                    node.command("CLUSTER", "REPLICATE", master_id)
                    replicating = True
                info = str(node.command("INFO", "replication"))
                if "master_link_status:up" in info:
                    return node
            except (OSError, _RespError):
                pass  # `master` is not known to the new node yet
            if time.monotonic() >= deadline:
                raise RedisServerError(
                    f"port {port} did not become a replica of port {master.port} "
                    f"within {timeout:.1f}s.\n{self._format_logs()}"
                )
            time.sleep(0.05)

    def wait_for_failover(
        self, killed: RedisServer, timeout: float = 60.0
    ) -> RedisServer:
        """Block until every running node reports ``cluster_state:ok``, sees
        `killed` as failed and sees every slot served by a running master;
        returns the node now serving the slots `killed` served (its replica).

        Raises:
            RedisServerError: if that does not happen within `timeout`.
        """
        slot = self._served_before[killed.port]
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                if self._failed_over(killed):
                    return self.master_for_slot(slot)
            except (OSError, _RespError, StopIteration) as error:
                last = repr(error)
            if time.monotonic() >= deadline:
                raise RedisServerError(
                    f"no replica took over from port {killed.port} within "
                    f"{timeout:.1f}s ({last}).\n{self._format_logs()}"
                )
            time.sleep(0.05)

    def _failed_over(self, killed: RedisServer) -> bool:
        for node in self._live_nodes():
            if "cluster_state:ok" not in str(node.command("CLUSTER", "INFO")):
                return False
            table = self.node_table(via=node)
            gone = next(n for n in table if n.port == killed.port)
            served = sum(
                high - low + 1
                for n in table
                if n.is_master and not n.failed
                for low, high in n.slots
            )
            if not gone.failed or gone.slots or served != _SLOTS:
                return False
        return True

    def wait_for_replicas_in_sync(self, timeout: float | None = None) -> None:
        """Block until every running replica's link to its master is up."""
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        while True:
            pending = []
            for node in self._live_nodes():
                info = str(node.command("INFO", "replication"))
                if "role:slave" in info and "master_link_status:up" not in info:
                    pending.append(node.port)
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise RedisServerError(
                    f"replicas {pending} did not sync with their masters.\n"
                    f"{self._format_logs()}"
                )
            time.sleep(0.05)

    def __enter__(self) -> RedisCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        ports = ",".join(str(node.port) for node in self.nodes)
        return f"<{type(self).__name__} {HOST}:{ports}>"

    def _create(self) -> None:
        argv = [self._cli, "--cluster", "create"]
        argv += [f"{host}:{port}" for host, port in self.startup_nodes]
        argv += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        try:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.startup_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise RedisServerError(
                f"`{' '.join(argv)}` timed out after {self.startup_timeout:.1f}s.\n"
                f"{self._format_logs()}"
            ) from error
        if result.returncode != 0:
            raise RedisServerError(
                f"`{' '.join(argv)}` failed with exit code {result.returncode}:\n"
                f"{result.stdout}{result.stderr}\n{self._format_logs()}"
            )

    def _wait_until_ok(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        expected = len(self.nodes)
        states: dict[int, str] = {}
        while True:
            for node in self.nodes:
                try:
                    info = str(node.command("CLUSTER", "INFO"))
                except (OSError, _RespError) as error:
                    states[node.port] = f"error: {error!r}"
                    continue
                fields = dict(line.partition(":")[::2] for line in info.splitlines())
                state = fields.get("cluster_state", "?")
                known = fields.get("cluster_known_nodes", "?")
                states[node.port] = f"cluster_state:{state} cluster_known_nodes:{known}"
            healthy = f"cluster_state:ok cluster_known_nodes:{expected}"
            if all(state == healthy for state in states.values()):
                return
            if time.monotonic() >= deadline:
                summary = "\n".join(f"  {HOST}:{p} -> {s}" for p, s in states.items())
                raise RedisServerError(
                    f"Redis Cluster did not reach cluster_state:ok within "
                    f"{self.startup_timeout:.1f}s:\n{summary}\n{self._format_logs()}"
                )
            time.sleep(0.05)

    def _format_logs(self) -> str:
        return "\n".join(node._format_log() for node in self.nodes)
