"""Exec probes for containers the kubelet cannot reach over HTTP.

The extender sidecar listens on 127.0.0.1 only, which the kubelet's httpGet probe (sent to the
pod IP) cannot reach; the agent has no server at all. So their probes run this module, which
imports nothing heavy:

    python -m scheduler.agent.probe --url http://127.0.0.1:8888/healthz
    python -m scheduler.agent.probe --file /tmp/gpupack/agent-alive --max-age 200
"""

from __future__ import annotations

import argparse
import time
import urllib.error
import urllib.request
from pathlib import Path


def check_url(url: str, timeout_s: float) -> str | None:
    """None when the URL answers 2xx, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return None if 200 <= resp.status < 300 else f"{url}: HTTP {resp.status}"
    except (urllib.error.URLError, OSError) as e:
        return f"{url}: {e}"


def check_file(path: Path, max_age_s: float, now: float | None = None) -> str | None:
    """None when the heartbeat file was touched within `max_age_s`, else why not."""
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except OSError as e:
        return f"{path}: {e}"
    return None if age <= max_age_s else f"{path}: last beat {age:.0f}s ago (> {max_age_s:.0f}s)"


def parser() -> argparse.ArgumentParser:
    """The probe's command line (the manifests' exec probes are checked against it)."""
    ap = argparse.ArgumentParser(prog="python -m scheduler.agent.probe", description=(__doc__ or "").split("\n")[0])
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--url", help="an http URL that must answer 2xx")
    what.add_argument("--file", type=Path, help="a heartbeat file that must be fresh")
    ap.add_argument("--max-age", type=float, default=180.0, help="seconds a heartbeat may be old")
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the URL")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    problem = check_url(args.url, args.timeout) if args.url else check_file(args.file, args.max_age)
    if problem:
        print(problem)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
