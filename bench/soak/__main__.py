"""The command: `python -m bench.soak [--json] ...` (see the package's docstring for what it measures). Parses the
options, soaks each deployment in turn, and prints one JSON object with the totals over them."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import bench.soak
from bench.soak.recorder import log
from bench.soak.run import soak

DEFAULT_POSTGRES = os.environ.get("LIFELONG_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Not the tests' /0: this run flushes it.
DEFAULT_REDIS = "redis://127.0.0.1:6379/5"
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def local_url(value: str) -> str:
    """The soak reaches this machine only."""
    if urlsplit(value).hostname not in LOCAL_HOSTS:
        raise argparse.ArgumentTypeError(f"{value}: only a server on 127.0.0.1 may be used")
    return value


def interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # the finally blocks stop every process and drop the database


def main(argv: list[str] | None = None) -> int:
    # The usage line names the command (argparse would say "__main__.py"); the description is the package's.
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=bench.soak.__doc__.splitlines()[0])
    parser.add_argument("--deployment", choices=["embedded", "postgres", "both"], default="both")
    parser.add_argument("--duration-s", type=float, default=600.0, help="seconds of load per deployment")
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the clients' operation mix")
    parser.add_argument("--kill-every-s", type=float, default=60.0, help="SIGKILL a worker this often")
    parser.add_argument("--drain-timeout-s", type=float, default=300.0,
                        help="longest wait for the workers to finish after the load")
    parser.add_argument("--base", default="preset:tiny", help="base of the agents (small and fast by default)")
    parser.add_argument("--max-tokens", type=int, default=16, help="reply budget of every turn")
    parser.add_argument("--workers", type=int, default=2, help="`lifelong worker` processes (postgres)")
    parser.add_argument("--snapshot-min-tokens", type=int, default=8192,
                        help="LIFELONG_SNAPSHOT_MIN_TOKENS of the deployment (low: snapshots run during the soak)")
    parser.add_argument("--postgres-url", type=local_url, default=DEFAULT_POSTGRES,
                        help="a PostgreSQL server to create the soak's own database on (dropped after)")
    parser.add_argument("--redis-url", type=local_url, default=DEFAULT_REDIS, help="a Redis database this flushes")
    parser.add_argument("--keep-database", action="store_true", help="keep the PostgreSQL database (default: dropped)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, interrupted)
    kinds = ["embedded", "postgres"] if args.deployment == "both" else [args.deployment]
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    report: dict = {"config": {key: value for key, value in vars(args).items() if key != "json"},
                    "logs": str(workdir), "deployments": {}}
    try:
        for kind in kinds:
            report["deployments"][kind] = soak(kind, args, workdir / kind)
    except KeyboardInterrupt:
        log(f"interrupted: every process stopped; logs in {workdir}")
        return 130
    results = report["deployments"].values()
    report["5xx"] = sum(result["5xx"]["count"] for result in results)
    report["in_band_server_faults"] = sum(result["in_band_server_faults"]["count"] for result in results)
    report["audit_ok"] = all(result["audit_ok"] for result in results)
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
