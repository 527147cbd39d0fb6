"""TLS on a real uvicorn server (127.0.0.1, free port): a client trusting only a throw-away CA gets
answers, and a rotation of the certificate files is served without a restart. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from webhook.app import Metrics
from webhook.server import build_server
from webhook.settings import WebhookSettings
from webhook.tls import CertReloader

REVIEW = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "tls-1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
    "object": {"metadata": {"generateName": "p-"}, "spec": {"containers": [
        {"name": "main", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}}


def write_pair(cert: trustme.LeafCert, d: Path) -> None:
    """Replace both files the way a Secret update does: new files renamed over the old ones."""
    for name, blob in (("tls.key", cert.private_key_pem.bytes()), ("tls.crt", cert.cert_chain_pems[0].bytes())):
        tmp = d / f".{name}.tmp"
        tmp.write_bytes(blob)
        os.replace(tmp, d / name)


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no system roots: this CA only
    ctx.load_verify_locations(cadata=ca.cert_pem.bytes().decode())
    return ctx


def served_cert(port: int, ca: trustme.CA) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s, \
            client_context(ca).wrap_socket(s, server_hostname="127.0.0.1") as t:
        return t.getpeercert(binary_form=True) or b""


def der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def wait_for(check: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, trustme.CA, Path, Metrics]]:
    ca = trustme.CA()
    write_pair(ca.issue_cert("127.0.0.1", "localhost"), tmp_path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # the socket is handed to uvicorn: no race for the port
    port = sock.getsockname()[1]
    settings = WebhookSettings(host="127.0.0.1", port=port, tls_cert=tmp_path / "tls.crt",
                               tls_key=tmp_path / "tls.key", log_level="warning")
    metrics = Metrics.create()
    server, _ = build_server(settings, metrics)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: server.started, 10), "uvicorn did not start"
        yield port, ca, tmp_path, metrics
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive()


def test_client_trusting_only_the_ca_gets_answers(served: tuple[int, trustme.CA, Path, Metrics]) -> None:
    port, ca, _, _ = served
    with httpx.Client(verify=client_context(ca), timeout=5) as c:
        r = c.post(f"https://127.0.0.1:{port}/mutate?timeout=5s", content=json.dumps(REVIEW).encode())
        assert r.status_code == 200
        assert r.json()["response"]["uid"] == "tls-1" and r.json()["response"]["patchType"] == "JSONPatch"
        assert c.get(f"https://127.0.0.1:{port}/healthz").text == "ok"
    with pytest.raises(httpx.ConnectError), httpx.Client(verify=client_context(trustme.CA()), timeout=5) as c:
        c.get(f"https://127.0.0.1:{port}/healthz")


def test_rotation_is_picked_up_without_restart(served: tuple[int, trustme.CA, Path, Metrics]) -> None:
    port, ca, d, metrics = served
    first = served_cert(port, ca)
    new_ca = trustme.CA()
    second = new_ca.issue_cert("127.0.0.1", "localhost")
    write_pair(second, d)
    assert wait_for(lambda: served_cert(port, new_ca) == der(second))
    assert first != der(second)
    with pytest.raises(ssl.SSLCertVerificationError):  # the old CA no longer vouches for what is served
        served_cert(port, ca)
    with httpx.Client(verify=client_context(new_ca), timeout=5) as c:
        r = c.post(f"https://127.0.0.1:{port}/mutate", content=json.dumps(REVIEW).encode())
        assert r.json()["response"]["allowed"] is True
    assert metrics.cert_reloads.labels("ok")._value.get() == 1


def test_a_broken_pair_keeps_the_last_good_one(tmp_path: Path) -> None:
    ca = trustme.CA()
    good, other = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    write_pair(good, tmp_path)
    seen: list[bool] = []
    r = CertReloader(tmp_path / "tls.crt", tmp_path / "tls.key", on_reload=seen.append)
    start = r.current()
    (tmp_path / "tls.crt").write_bytes(other.cert_chain_pems[0].bytes())  # cert rotated, key not yet
    assert r.current() is start and seen == [False]
    assert r.current() is start and seen == [False]  # the same broken pair is not retried
    (tmp_path / "tls.key").write_bytes(other.private_key_pem.bytes())
    assert r.current() is not start and seen == [False, True] and r.reloads == 1
    (tmp_path / "tls.key").unlink()  # mid-swap: a file briefly missing
    assert r.current() is not start and seen == [False, True]


def test_start_up_refuses_a_bad_pair(tmp_path: Path) -> None:
    ca = trustme.CA()
    a, b = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    (tmp_path / "tls.crt").write_bytes(a.cert_chain_pems[0].bytes())
    (tmp_path / "tls.key").write_bytes(b.private_key_pem.bytes())
    with pytest.raises(ssl.SSLError):
        CertReloader(tmp_path / "tls.crt", tmp_path / "tls.key")


@pytest.mark.parametrize("factory", [True, False])
def test_uvicorn_gets_the_reloading_context_either_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       factory: bool) -> None:
    import webhook.server

    monkeypatch.setattr(webhook.server, "HAS_SSL_FACTORY", factory)  # older uvicorn: no ssl_context_factory
    write_pair(trustme.CA().issue_cert("127.0.0.1"), tmp_path)
    settings = WebhookSettings(host="127.0.0.1", port=9443, tls_cert=tmp_path / "tls.crt",
                               tls_key=tmp_path / "tls.key")
    server, reloader = build_server(settings)
    assert reloader is not None
    if not server.config.loaded:
        server.config.load()  # what Server.serve does first
    assert server.config.ssl is reloader.context
    assert reloader.context.sni_callback is not None
