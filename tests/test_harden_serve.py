"""Issue 17, security: `gpupack serve` refuses a non-loopback --host unless kube-scheduler must show a
client certificate (TLS with a client CA) or the operator passes --allow-unauthenticated-remote."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from scheduler.serve_cli import register
from scheduler.settings import Settings


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "gpupack.example.com"])
def test_a_remote_host_without_client_auth_is_refused(host: str) -> None:
    with pytest.raises(ValidationError, match="refusing to listen"):
        Settings(host=host)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "localhost"])
def test_loopback_needs_nothing(host: str) -> None:
    assert Settings(host=host).host == host


def test_the_override_or_tls_with_a_client_ca_allows_a_remote_host(tmp_path: Path) -> None:
    assert Settings(host="0.0.0.0", allow_unauthenticated_remote=True).allow_unauthenticated_remote
    cert, key, ca = (tmp_path / n for n in ("tls.crt", "tls.key", "ca.crt"))
    for f in (cert, key, ca):
        f.write_text("-")
    assert Settings(host="0.0.0.0", tls_cert=cert, tls_key=key, tls_client_ca=ca).tls_client_ca == ca
    with pytest.raises(ValidationError, match="refusing to listen"):  # TLS alone authenticates no client
        Settings(host="0.0.0.0", tls_cert=cert, tls_key=key)
    with pytest.raises(ValidationError, match="go together"):
        Settings(tls_cert=cert)
    with pytest.raises(ValidationError, match="needs tls_cert"):
        Settings(tls_client_ca=ca)


def test_serve_stops_before_listening_on_a_remote_host() -> None:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    register(app)
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "refusing to listen on 0.0.0.0" in result.output
    assert "--allow-unauthenticated-remote" in result.output


def test_serve_with_a_client_ca_answers_only_clients_with_a_certificate(tmp_path: Path) -> None:
    """The flags reach uvicorn: over TLS, a client without a certificate from the CA is refused."""
    import socket
    import ssl
    import subprocess
    import sys
    import time

    import httpx
    import trustme

    server_ca, client_ca = trustme.CA(), trustme.CA()
    leaf = server_ca.issue_cert("127.0.0.1")
    leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "tls.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    client_ca.cert_pem.write_to_path(str(tmp_path / "client-ca.crt"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import sys, typer; sys.argv[0] = 'gpupack'; from scheduler.serve_cli import register; "
            "app = typer.Typer(); app.callback()(lambda: None); register(app); app()")
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--port", str(port), "--tls-cert",
                             str(tmp_path / "tls.pem"), "--tls-key", str(tmp_path / "tls.key"), "--tls-client-ca",
                             str(tmp_path / "client-ca.crt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        good = ssl.create_default_context()
        server_ca.configure_trust(good)
        client_ca.issue_cert("kube-scheduler").configure_cert(good)
        bare = ssl.create_default_context()
        server_ca.configure_trust(bare)
        url = f"https://127.0.0.1:{port}/healthz"
        deadline = time.monotonic() + 30
        while True:  # bounded: until the server answers a client with a certificate
            try:
                assert httpx.get(url, verify=good, timeout=2).status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "gpupack serve with TLS did not come up"
                time.sleep(0.1)
        with pytest.raises(httpx.TransportError):  # no client certificate: the handshake fails
            httpx.get(url, verify=bare, timeout=2)
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
