"""Webhook configuration: one pydantic-settings class (env prefix GPUPACK_WEBHOOK_), checked at start-up.

A bad configuration fails here, never per request: plain HTTP only on a loopback address, the
certificate and key given together, a scheduler name Kubernetes would accept.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from binpack.types import MAX_GPUS_PER_NODE
from scheduler.logfmt import log_format
from scheduler.loglevel import log_level
from scheduler.metricsport import WEBHOOK_PORT

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebhookSettings(BaseSettings):
    """Everything `gpupack webhook` can be told; each field is also GPUPACK_WEBHOOK_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="GPUPACK_WEBHOOK_", frozen=True, extra="forbid")

    host: str = "0.0.0.0"  # in a pod the apiserver reaches the webhook on the pod IP
    port: int = Field(default=9443, ge=1, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_http: bool = False  # local trials only; refused unless host is loopback
    scheduler_name: str = "gpupack-scheduler"
    runtime_class: str = ""  # e.g. "nvidia"; empty leaves runtimeClassName alone
    max_gpus_per_node: int = Field(default=8, ge=1, le=MAX_GPUS_PER_NODE)  # the largest GPU node of the cluster
    model_affinity: bool = True  # required node affinity on nvidia.com/gpu.product when a model is named
    # namespaces whose GPUs come through DRA in allocate mode (webhook/dra.py): GPU asks become claims
    # from gpupack's templates there, and claims gpupack cannot allocate are refused
    dra_namespaces: str = ""  # comma-separated
    max_body_bytes: int = Field(default=4 * 2**20, ge=2**16, le=64 * 2**20)
    body_timeout_s: float = Field(default=10.0, gt=0, le=60)
    log_level: str = "info"
    log_format: str = "text"  # text or json, as serve and agent (scheduler/logfmt.py)
    access_log: bool = False  # uvicorn's access log, in log_format
    # /metrics: plain HTTP on a port of its own, never on the TLS port next to /mutate (0: off)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=WEBHOOK_PORT, ge=0, le=65535)

    @property
    def dra_namespace_set(self) -> frozenset[str]:
        return frozenset(x.strip() for x in self.dra_namespaces.split(",") if x.strip())

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        return log_level(v)

    @field_validator("log_format")
    @classmethod
    def _format(cls, v: str) -> str:
        return log_format(v)

    @model_validator(mode="after")
    def _safe(self) -> WebhookSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both files")
        if self.tls_cert is None and not self.insecure_http:
            raise ValueError("the apiserver only calls webhooks over TLS: give tls_cert and tls_key "
                             "(or insecure_http on 127.0.0.1 for a local trial)")
        if self.tls_cert is not None and self.insecure_http:
            raise ValueError("insecure_http and tls_cert exclude each other")
        if self.insecure_http and not is_loopback(self.host):
            raise ValueError(f"insecure_http serves plain HTTP and is refused on {self.host}; use 127.0.0.1")
        if self.metrics_port == self.port:
            raise ValueError(f"metrics_port and port are both {self.port}: metrics have a port of their own")
        if not _DNS_SUBDOMAIN.match(self.scheduler_name):
            raise ValueError(f"scheduler_name {self.scheduler_name!r} is not a DNS subdomain")
        if self.runtime_class and not _DNS_SUBDOMAIN.match(self.runtime_class):
            raise ValueError(f"runtime_class {self.runtime_class!r} is not a DNS subdomain")
        return self
