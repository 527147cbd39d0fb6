"""`gpupack serve --cluster FILE`: ResourceSlices and ResourceClaims in the file, beside Nodes and Pods."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml
from dra_support import load, nodes, slices
from extender_support import wait_for
from fastapi.testclient import TestClient
from pydantic import ValidationError

from binpack import Placement
from scheduler.extender.app import create_app
from scheduler.settings import Settings
from scheduler.state.dra_standalone import load_dra_objects
from scheduler.state.standalone import InvalidCluster

CLAIM = load("claims/scheduled-ncc-true/after/claim-ncc-2gpu-pcieroot-gpu-kgrk7.json")


def test_a_list_file_with_slices_and_claims_serves_them(tmp_path: Path) -> None:
    f = tmp_path / "cluster.json"
    items = nodes() + [{**s, "kind": "ResourceSlice"} for s in slices()] + [{**CLAIM, "kind": "ResourceClaim"}]
    f.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    app = create_app(Settings(cluster=f))
    state = app.state.gpupack.state
    with TestClient(app):
        wait_for(lambda: state.ready and bool(state.ledger.recorded()))
        assert list(state.ledger.recorded().values()) == [Placement("dra-t4-node", (1, 2))]
        assert [g.uuid[:8] for g in state.node("dra-h100-node").gpus][6:] == ["GPU-58b1", "GPU-b3e3"]


def test_the_short_form_takes_resource_slices_and_claims_keys(tmp_path: Path) -> None:
    f = tmp_path / "cluster.yaml"
    f.write_text(yaml.safe_dump({"nodes": nodes(), "resourceSlices": slices(), "resourceClaims": [CLAIM]}))
    got_slices, got_claims = load_dra_objects(f)
    assert len(got_slices) == 3 and [c["metadata"]["name"] for c in got_claims] == [CLAIM["metadata"]["name"]]
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"nodes": nodes()}))
    assert load_dra_objects(plain) == ([], [])


def test_a_claim_without_uid_is_refused_naming_it(tmp_path: Path) -> None:
    f = tmp_path / "cluster.yaml"
    bad = {**CLAIM, "metadata": {"name": "x"}}
    f.write_text(yaml.safe_dump({"nodes": nodes(), "resourceClaims": [CLAIM, bad]}))
    with pytest.raises(InvalidCluster, match=r"resourceClaims\[1\]: .*metadata.uid"):
        load_dra_objects(f)


def test_dra_mode_is_observe_allocate_or_off() -> None:
    assert Settings().dra_mode == "observe"
    assert Settings(dra_mode="allocate").dra_mode == "allocate"
    with pytest.raises(ValidationError, match="dra_mode"):
        Settings(dra_mode="write")  # type: ignore[arg-type]


def test_dra_off_ignores_slices(tmp_path: Path) -> None:
    f = tmp_path / "cluster.yaml"
    f.write_text(yaml.safe_dump({"nodes": nodes(), "resourceSlices": slices(), "resourceClaims": [CLAIM]}))
    app = create_app(Settings(cluster=f, dra_mode="off"))
    state = app.state.gpupack.state
    with TestClient(app):
        wait_for(lambda: state.ready)
        assert app.state.dra is None and state.ledger.recorded() == {}
        assert "resourceslices" not in state.synced
