"""requirements.lock (what the image installs, with hashes) is in step with pyproject.toml: every
runtime dependency is pinned to a version its specifier allows, every pin carries hashes, and the
lock holds the runtime requirements of every package it pins (read from the installed metadata)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)")


def _lock() -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes)."""
    out: dict[str, tuple[Version, int]] = {}
    current = ""
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = _PIN.match(line)
        if m:
            current = canonicalize_name(m.group(1))
            out[current] = (Version(m.group(2)), 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            version, n = out[current]
            out[current] = (version, n + 1)
    return out


def _runtime_requirements() -> list[Requirement]:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [Requirement(r) for r in doc["project"]["dependencies"]]


def test_every_dependency_is_pinned_within_its_specifier_with_hashes() -> None:
    lock = _lock()
    assert len(lock) > 20
    for req in _runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is not in requirements.lock: regenerate it (its header says how)"
        version, _ = lock[name]
        assert req.specifier.contains(version, prereleases=True), f"{req} but the lock pins {version}"
    unhashed = [n for n, (_, hashes) in lock.items() if hashes == 0]
    assert not unhashed, f"pins without hashes: {unhashed}"


def test_the_lock_is_closed_under_runtime_requirements() -> None:
    """Each pinned package's own runtime requirements (for this platform, no extras) are pinned too, so
    `pip install --require-hashes` cannot stop on a missing one."""
    lock = _lock()
    env = {**default_environment(), "extra": ""}
    missing = set()
    for name in lock:
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here: its own closure was checked when the lock was made
        for raw in requires:
            req = Requirement(raw)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            if canonicalize_name(req.name) not in lock:
                missing.add(f"{name} -> {req.name}")
    extras = {canonicalize_name(r.name): r.extras for r in _runtime_requirements() if r.extras}
    assert extras == {"uvicorn": {"standard"}}  # uvicorn[standard]'s extras are pinned by name below
    for extra_dep in ("httptools", "uvloop", "websockets", "watchfiles", "python-dotenv", "pyyaml"):
        assert extra_dep in lock, extra_dep
    assert not missing, f"requirements of pinned packages missing from the lock: {sorted(missing)}"


def test_the_lock_names_no_index_of_the_machine_that_made_it() -> None:
    options = [ln.strip() for ln in (ROOT / "requirements.lock").read_text().splitlines()
               if ln.strip().startswith("--") and not ln.strip().startswith("--hash=")]
    assert options == [], "index URLs or find-links of a build machine: regenerate with --no-emit-index-url"
