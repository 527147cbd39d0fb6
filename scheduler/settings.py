"""The extender's settings (pydantic-settings, environment prefix GPUPACK_), checked at start-up.

A bad value stops `gpupack serve` before it listens, with a message naming the setting; nothing is
re-validated per request. Command-line flags override the environment.

kube-scheduler's extender calls carry no credentials, and bind writes to the API server with the
extender's own rights: anyone who can reach the port can bind any pod anywhere. So the extender
listens on loopback (its place is a sidecar of kube-scheduler) unless TLS with client certificates is
configured (kube-scheduler's extender tlsConfig gives it a client certificate), or the operator says,
with allow_unauthenticated_remote, that the network itself is the boundary.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler.logfmt import log_format
from scheduler.loglevel import log_level
from scheduler.metricsport import EXTENDER_PORT


def is_loopback(host: str) -> bool:
    """Whether the address is a loopback one (only this machine can connect)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname: it may resolve to anything


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GPUPACK_", extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8888, ge=1, le=65535)
    url_prefix: str = ""
    kubeconfig: Path | None = None
    in_cluster: bool = False
    cluster: Path | None = None  # standalone mode: a YAML/JSON cluster file
    max_body_bytes: int = Field(default=32 * 2**20, ge=1024)  # 500 full Nodes with managedFields are ~2 MiB
    # a body that has not fully arrived by then is answered 408: a stalled client cannot hold a connection
    body_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # nodes per filter/prioritize/preempt call (413 past it), so the work per request stays bounded;
    # well above the largest real clusters (~15,000 nodes)
    max_nodes: int = Field(default=50_000, ge=100, le=1_000_000)
    assume_ttl_s: float = Field(default=60.0, gt=0)
    api_timeout_s: float = Field(default=5.0, gt=0, le=60)
    watch_timeout_s: int = Field(default=300, ge=1, le=3600)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    mix_refresh_s: float = Field(default=2.0, ge=0)
    # filter passes at most this many of gpupack's best nodes (ties kept) to pods without soft preferences,
    # so kube-scheduler scores a handful of nodes instead of thousands and gpupack's choice sticks; 0 passes
    # every fitting node
    # (scheduler/extender/shortlist.py, docs/scheduler.md)
    shortlist: int = Field(default=8, ge=0, le=10_000)
    log_level: str = "info"
    log_format: str = "text"  # text or json (scheduler/logfmt.py), the same in serve, webhook and agent
    access_log: bool = False  # uvicorn's access log, in log_format: one line per verb call
    # /metrics on a port of its own (scheduler/metricsport.py), so that it can listen beyond the loopback
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=EXTENDER_PORT, ge=0, le=65535)  # 0: only on the verbs' port
    # DRA (resource.k8s.io/v1): "observe" reads slices and claims and adopts kube-scheduler's allocations;
    # "allocate" makes gpupack the allocator of the GPU classes (the profile disables DynamicResources) and
    # writes the claims at bind; "off" ignores DRA (docs/dra.md)
    dra_mode: Literal["observe", "allocate", "off"] = "observe"
    # allocate mode only (scheduler/dra/routing.py): the DeviceClasses gpupack allocates (comma-separated; empty:
    # gpu.nvidia.com and mig.nvidia.com), and the schedulerNames whose profile disables DynamicResources (empty:
    # every profile that calls gpupack); claims of other classes, pods of other profiles are left to DRA or refused
    dra_allocate_classes: str = ""
    dra_allocate_profiles: str = ""
    tls_cert: Path | None = None  # serve HTTPS with this certificate and tls_key
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # require client certificates signed by this CA (kube-scheduler's)
    # listen on a non-loopback address without client authentication: only where the network is the
    # boundary (e.g. a NetworkPolicy admits kube-scheduler alone); documented in docs/scheduler.md
    allow_unauthenticated_remote: bool = False

    @field_validator("url_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        v = v.rstrip("/")  # kube-scheduler trims the urlPrefix's trailing slash the same way
        if v and not v.startswith("/"):
            raise ValueError(f"must start with '/' (e.g. /gpupack), got {v!r}")
        return v

    @field_validator("kubeconfig", "cluster", "tls_cert", "tls_key", "tls_client_ca")
    @classmethod
    def _exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"no such file: {v}")
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        return log_level(v)

    @field_validator("log_format")
    @classmethod
    def _format(cls, v: str) -> str:
        return log_format(v)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        sources = [n for n, on in (("kubeconfig", self.kubeconfig), ("in_cluster", self.in_cluster),
                                   ("cluster", self.cluster)) if on]
        if len(sources) > 1:
            raise ValueError(f"choose one cluster source, not {' and '.join(sources)}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both files")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key (client certificates need TLS)")
        if not is_loopback(self.host) and self.tls_client_ca is None and not self.allow_unauthenticated_remote:
            raise ValueError(
                f"refusing to listen on {self.host}: the verbs carry no authentication and bind acts with "
                "gpupack's API rights; listen on 127.0.0.1 (the kube-scheduler sidecar), or give tls_cert, "
                "tls_key and tls_client_ca (--tls-cert/--tls-key/--tls-client-ca), or accept the risk with "
                "--allow-unauthenticated-remote")
        if self.metrics_port == self.port:
            raise ValueError(f"metrics_port and port are both {self.port}: give metrics a port of its own")
        return self

    @property
    def mode(self) -> str:
        if self.kubeconfig or self.in_cluster:
            return "live"
        return "standalone" if self.cluster else "demo"


def describe(e: ValidationError) -> str:
    """One line per bad setting, named as the user writes it (flag / GPUPACK_ variable)."""
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "settings"
        name = f"GPUPACK_{loc.upper()}" if err["loc"] else "settings"
        lines.append(f"bad setting {name} (--{loc.replace('_', '-')}): {err['msg']}")
    return "\n".join(lines)
