"""`gpupack serve`: bad settings stop start-up with a message naming them; on a fresh machine it serves
the embedded demo cluster over real HTTP, as the docs' curl examples show."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from scheduler.loglevel import log_level
from scheduler.serve_cli import register
from scheduler.settings import Settings
from webhook.settings import WebhookSettings


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    register(app)
    return app


@pytest.mark.parametrize(("argv", "env", "named"), [
    (["serve", "--port", "0"], {}, "GPUPACK_PORT (--port)"),
    (["serve", "--url-prefix", "gpupack"], {}, "GPUPACK_URL_PREFIX (--url-prefix)"),
    (["serve", "--cluster", "/no/such/file.yaml"], {}, "GPUPACK_CLUSTER (--cluster)"),
    (["serve"], {"GPUPACK_ASSUME_TTL_S": "-1"}, "GPUPACK_ASSUME_TTL_S"),
    (["serve"], {"GPUPACK_API_TIMEOUT_S": "soon"}, "GPUPACK_API_TIMEOUT_S"),
    (["serve", "--log-level", "verbose"], {}, "GPUPACK_LOG_LEVEL (--log-level)"),
])
def test_bad_settings_stop_startup(argv: list[str], env: dict[str, str], named: str) -> None:
    result = CliRunner().invoke(_app(), argv, env=env)
    assert result.exit_code == 2
    assert f"bad setting {named}" in result.output


def test_help_shows_every_default() -> None:
    result = CliRunner().invoke(_app(), ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag, default in (("--host", "127.0.0.1"), ("--port", "8888"), ("--log-level", "info"),
                          ("--url-prefix", "none"), ("--cluster", "none")):
        line = next(x for x in result.output.splitlines() if x.lstrip("│ ").startswith(flag + " "))
        assert f"[default: ({default})]" in line, line


@pytest.mark.parametrize("given", ["DEBUG", "debug", "Warning", " info "])
def test_log_level_any_case_everywhere(given: str) -> None:
    want = given.strip().lower()
    assert log_level(given) == want
    assert Settings(log_level=given).log_level == want
    assert WebhookSettings(log_level=given, insecure_http=True, host="127.0.0.1").log_level == want


def test_log_level_refusal_names_the_choices() -> None:
    with pytest.raises(ValueError, match="critical, error, warning, info, debug"):
        log_level("verbose")
    with pytest.raises(ValidationError, match="any case"):
        WebhookSettings(log_level="trace", insecure_http=True, host="127.0.0.1")


def test_serve_demo_over_real_http() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import sys, typer; sys.argv[0] = 'gpupack'; from scheduler.serve_cli import register; "
            "app = typer.Typer(); app.callback()(lambda: None); register(app); app()")
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--port", str(port), "--metrics-port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gpupack serve did not become ready"
            time.sleep(0.1)
        pod = {"metadata": {"name": "train", "namespace": "default", "uid": "u-1"},
               "spec": {"containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": "4"}}}]}}
        r = httpx.post(f"{base}/filter", json={"Pod": pod, "NodeNames": ["dgx-h100-0", "t4-0", "new-node"]})
        assert r.json()["NodeNames"] == ["dgx-h100-0", "t4-0"]
        r = httpx.post(f"{base}/bind", json={"PodName": "train", "PodNamespace": "default", "PodUID": "u-1",
                                             "Node": "dgx-h100-0"})
        assert r.json() == {"Error": ""}
        # the README's preempt: an 8-GPU pod, with the pod just bound offered as the victim
        big = {"metadata": {"name": "big", "namespace": "default", "uid": "u-2"},
               "spec": {"containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}
        r = httpx.post(f"{base}/filter", json={"Pod": big, "NodeNames": ["dgx-h100-0"]})
        assert "4 free" in r.json()["FailedNodes"]["dgx-h100-0"]
        victims = {"dgx-h100-0": {"Pods": [{"UID": "u-1"}], "NumPDBViolations": 0}}
        r = httpx.post(f"{base}/preempt", json={"Pod": big, "NodeNameToMetaVictims": victims})
        assert r.json()["NodeNameToMetaVictims"] == victims
        assert "gpupack_binds_total{result=\"ok\"} 1.0" in httpx.get(f"{base}/metrics").text
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    # uvicorn shuts down gracefully (the lifespan stops the watch threads), then re-raises SIGTERM
    assert "Application shutdown complete" in err and proc.returncode in (0, -15)


def test_every_component_registers_its_commands() -> None:
    """A component whose import fails is an error, not a command silently missing from --help."""
    from scheduler.cli import app

    names = {c.name or getattr(c.callback, "__name__", "") for c in app.registered_commands}
    names |= {g.name for g in app.registered_groups}
    assert {"serve", "webhook", "agent", "bench", "report", "explain", "demo"} <= names, names
