"""The extender's settings (pydantic-settings, environment prefix GPUPACK_), checked at start-up.

A bad value stops `gpupack serve` before it listens, with a message naming the setting; nothing is
re-validated per request. Command-line flags override the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler.loglevel import log_level


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GPUPACK_", extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8888, ge=1, le=65535)
    url_prefix: str = ""
    kubeconfig: Path | None = None
    in_cluster: bool = False
    cluster: Path | None = None  # standalone mode: a YAML/JSON cluster file
    max_body_bytes: int = Field(default=32 * 2**20, ge=1024)  # 500 full Nodes with managedFields are ~2 MiB
    assume_ttl_s: float = Field(default=60.0, gt=0)
    api_timeout_s: float = Field(default=5.0, gt=0, le=60)
    watch_timeout_s: int = Field(default=300, ge=1, le=3600)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    mix_refresh_s: float = Field(default=2.0, ge=0)
    log_level: str = "info"
    # DRA (resource.k8s.io/v1): "observe" reads slices and claims and adopts kube-scheduler's allocations;
    # "allocate" makes gpupack the allocator of the GPU classes (the profile disables DynamicResources) and
    # writes the claims at bind; "off" ignores DRA (docs/dra.md)
    dra_mode: Literal["observe", "allocate", "off"] = "observe"

    @field_validator("url_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        v = v.rstrip("/")  # kube-scheduler trims the urlPrefix's trailing slash the same way
        if v and not v.startswith("/"):
            raise ValueError(f"must start with '/' (e.g. /gpupack), got {v!r}")
        return v

    @field_validator("kubeconfig", "cluster")
    @classmethod
    def _exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"no such file: {v}")
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        return log_level(v)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        sources = [n for n, on in (("kubeconfig", self.kubeconfig), ("in_cluster", self.in_cluster),
                                   ("cluster", self.cluster)) if on]
        if len(sources) > 1:
            raise ValueError(f"choose one cluster source, not {' and '.join(sources)}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
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
