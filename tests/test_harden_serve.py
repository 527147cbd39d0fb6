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
