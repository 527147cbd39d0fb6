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
from typer.testing import CliRunner

from scheduler.serve_cli import register


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
])
def test_bad_settings_stop_startup(argv: list[str], env: dict[str, str], named: str) -> None:
    result = CliRunner().invoke(_app(), argv, env=env)
    assert result.exit_code == 2
    assert f"bad setting {named}" in result.output


def test_serve_demo_over_real_http() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import sys, typer; sys.argv[0] = 'gpupack'; from scheduler.serve_cli import register; "
            "app = typer.Typer(); app.callback()(lambda: None); register(app); app()")
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--port", str(port)],
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
        assert "gpupack_binds_total{result=\"ok\"} 1.0" in httpx.get(f"{base}/metrics").text
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    # uvicorn shuts down gracefully (the lifespan stops the watch threads), then re-raises SIGTERM
    assert "Application shutdown complete" in err and proc.returncode in (0, -15)
