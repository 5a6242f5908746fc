"""`python -m benchmarks.peers`: set up `.venv-bench/` (peers, this package) and
the private libssl1.1 when needed, then run the harness in that virtualenv.
`--no-setup` runs in the current interpreter and skips savers it cannot import."""

from __future__ import annotations

import sys

from benchmarks.peers import setup_env


def main() -> None:
    argv = sys.argv[1:]
    if "--no-setup" not in argv and not setup_env.in_bench_venv():
        setup_env.ensure_venv()
        setup_env.reexec_in_venv(argv)
    from benchmarks.peers.run import main as run

    run(argv)


if __name__ == "__main__":
    main()
