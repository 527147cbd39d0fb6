"""`gpupack webhook` refuses unsafe settings; `gpupack webhook-config` prints a valid configuration."""

from __future__ import annotations

import base64
from pathlib import Path

import kubernetes_validate
import pytest
import trustme
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from scheduler.cli import app
from webhook.manifest import MANIFEST_PATH, webhook_configuration
from webhook.settings import WebhookSettings

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("kw", "why"), [
    ({}, "give tls_cert and tls_key"),
    ({"tls_cert": "c.pem"}, "go together"),
    ({"insecure_http": True, "host": "0.0.0.0"}, "refused on 0.0.0.0"),
    ({"insecure_http": True, "host": "127.0.0.1", "scheduler_name": "Bad_Name"}, "DNS subdomain"),
    ({"insecure_http": True, "host": "127.0.0.1", "max_gpus_per_node": 17}, "less than or equal to 16"),
])
def test_settings_refuse_unsafe_values(kw: dict[str, object], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        WebhookSettings(**kw)  # type: ignore[arg-type]


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUPACK_WEBHOOK_INSECURE_HTTP", "true")
    monkeypatch.setenv("GPUPACK_WEBHOOK_HOST", "::1")
    monkeypatch.setenv("GPUPACK_WEBHOOK_RUNTIME_CLASS", "nvidia")
    s = WebhookSettings()
    assert (s.host, s.port, s.runtime_class, s.scheduler_name) == ("::1", 9443, "nvidia", "gpupack-scheduler")


def test_webhook_command_exits_2_on_bad_configuration() -> None:
    r = runner.invoke(app, ["webhook", "--insecure-http", "--host", "0.0.0.0"])
    assert r.exit_code == 2
    assert "insecure_http serves plain HTTP" in r.output


def test_webhook_config_prints_a_valid_configuration(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    r = runner.invoke(app, ["webhook-config", "--ca-file", str(tmp_path / "ca.crt"), "--namespace", "gpu"])
    assert r.exit_code == 0, r.output
    doc = yaml.safe_load(r.output)
    kubernetes_validate.validate(doc, "1.36.0", strict=True)
    hook = doc["webhooks"][0]
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca.cert_pem.bytes()
    assert hook["clientConfig"]["service"] == {"namespace": "gpu", "name": "gpupack-webhook", "path": "/mutate",
                                               "port": 443}
    assert (hook["sideEffects"], hook["reinvocationPolicy"], hook["admissionReviewVersions"]) == (
        "None", "IfNeeded", ["v1"])
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["gpu", "kube-system"]
    assert hook["namespaceSelector"]["matchLabels"] == {"gpupack.io/webhook": "enabled"}  # the README's opt-in


def test_the_manifest_is_the_commands_output() -> None:
    """One source: the shipped MutatingWebhookConfiguration is exactly `gpupack webhook-config`."""
    r = runner.invoke(app, ["webhook-config"])
    assert r.exit_code == 0, r.output
    assert (ROOT / MANIFEST_PATH).read_text() == r.output
    doc = yaml.safe_load(r.output)
    kubernetes_validate.validate(doc, "1.36.0", strict=True)
    assert "caBundle" not in doc["webhooks"][0]["clientConfig"]  # the overlays fill it in
    assert doc == webhook_configuration(ca_pem=None)


def test_webhook_config_refusals(tmp_path: Path) -> None:
    (tmp_path / "x.pem").write_text("not a certificate")
    r = runner.invoke(app, ["webhook-config", "--ca-file", str(tmp_path / "x.pem")])
    assert r.exit_code == 2 and "no PEM certificate" in r.output
    with pytest.raises(ValueError, match="https"):
        webhook_configuration(ca_pem=trustme.CA().cert_pem.bytes(), url="http://x/mutate")
    out = webhook_configuration(ca_pem=trustme.CA().cert_pem.bytes(), url="https://10.0.0.1:9443/mutate")
    assert out["webhooks"][0]["clientConfig"]["url"] == "https://10.0.0.1:9443/mutate"
