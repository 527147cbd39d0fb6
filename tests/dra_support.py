"""Helpers for the DRA tests: the captured fixtures (tests/data/dra) and a ClusterState with DRA installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from scheduler.dra.state import CLAIMS, SLICES, DraState
from scheduler.state.cluster import ClusterState

DRA = Path(__file__).parent / "data" / "dra"
Obj = dict[str, Any]


def load(rel: str) -> Any:
    return orjson.loads((DRA / rel).read_bytes())


def nodes() -> list[Obj]:
    items: list[Obj] = load("driver/nodes.json")["items"]
    return items


def slices() -> list[Obj]:
    return [load(f"driver/resourceslice-{n}.json") for n in ("dra-a100-node", "dra-h100-node", "dra-t4-node")]


def state(claims: list[Obj] | None = None, pods: list[Obj] | None = None) -> tuple[ClusterState, DraState]:
    """A listed ClusterState over the fixture nodes and slices, with these claims and pods."""
    st = ClusterState(mix_refresh_s=0.0)
    dra = DraState(st)
    dra.install()
    st.replace("nodes", nodes())
    st.replace(SLICES, slices())
    st.replace(CLAIMS, claims or [])
    st.replace("pods", pods or [])
    return st, dra
