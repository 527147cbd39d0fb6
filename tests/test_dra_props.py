"""Property: whatever claims come and go (overlapping, bad, reallocated), the ledger never double-books a device
(binpack.validate is the oracle), never forgets a claim that alone holds its devices, and frees what is gone."""

from __future__ import annotations

import copy
from typing import Any

from dra_support import load, slices, state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from binpack import Demand, Placement, Snapshot, validate
from scheduler.dra.slices import inventory, parse_slice
from scheduler.state.kubeapi import WatchEvent

INV = {s["spec"]["nodeName"]: inventory(parse_slice(s).devices) for s in slices()}
DEVICES = sorted((node, dev) for node, inv in INV.items() for dev in inv.devices)
TEMPLATE = load("claims/scheduled-ncc-true/after/claim-ncc-1gpu-gpu-j2dtd.json")


def _claim(i: int, devs: list[tuple[str, str]], rv: int) -> dict[str, Any]:
    c = copy.deepcopy(TEMPLATE)
    c["metadata"].update(uid=f"c{i}", name=f"c{i}", resourceVersion=str(rv))
    c["status"]["allocation"]["devices"]["results"] = [
        {"request": "gpu", "driver": "gpu.nvidia.com", "pool": n, "device": d} for n, d in devs]
    return c


def _split(p: Placement) -> list[tuple[Demand, Placement]]:
    """One whole GPU or one MIG slot per placement, so the oracle can check each against its own demand."""
    out = [(Demand.whole(1), Placement(p.node, (g,))) for g in p.gpus]
    out += [(Demand.mig(m.profile, 1), Placement(p.node, mig=(m,), kind=p.kind)) for m in p.mig]
    return out


ops = st.lists(st.tuples(st.sampled_from(["put", "free", "delete", "slice"]), st.integers(0, 5),
                         st.lists(st.sampled_from(DEVICES), max_size=4)), max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_claims_never_double_book_and_never_forget(steps: list[tuple[str, int, list[tuple[str, str]]]]) -> None:
    cs, _ = state([])
    held: dict[int, list[tuple[str, str]]] = {}
    for rv, (op, i, devs) in enumerate(steps, 1):
        if op == "put":
            cs.push("resourceclaims", WatchEvent("MODIFIED" if i in held else "ADDED", _claim(i, devs, rv)))
            held[i] = devs
        elif op == "free" and i in held:
            c = _claim(i, held[i], rv)
            del c["status"]["allocation"]
            cs.push("resourceclaims", WatchEvent("MODIFIED", c))
            held[i] = []
        elif op == "delete" and i in held:
            cs.push("resourceclaims", WatchEvent("DELETED", _claim(i, held.pop(i), rv)))
        elif op == "slice":  # a driver restart: the node's slice goes and comes back
            s = slices()[i % 3]
            cs.push("resourceslices", WatchEvent("DELETED", s))
            cs.push("resourceslices", WatchEvent("ADDED", s))
        booked = cs.ledger.recorded()
        base = Snapshot.build([cs.ledger.nodes[n] for n in sorted(cs.ledger.nodes)])
        assert validate(base, [x for p in booked.values() for x in _split(p)]) == []
        owners: dict[tuple[str, str], set[int]] = {}
        for j, ds in held.items():
            for d in set(ds):
                owners.setdefault(d, set()).add(j)
        for j, ds in held.items():
            keys = [k for k in booked if k.startswith(f"claim:c{j}:")]
            if ds and all(owners[d] == {j} for d in ds):  # alone on its devices: must be booked, exactly
                assert sum(len(booked[k].gpus) + len(booked[k].mig) for k in keys) == len(set(ds))
            if not ds:
                assert not keys
        gone = {k.split(":")[1] for k in booked} - {f"c{j}" for j in held}
        assert not gone
    # a fresh list of the same objects rebuilds the same devices taken (who wins a contested device may differ)
    holders: dict[tuple[str, str], set[int]] = {}
    for j, ds in held.items():
        for d in ds:
            holders.setdefault(d, set()).add(j)
    alone = {j for j, ds in held.items() if all(holders[d] == {j} for d in ds)}
    fresh, _ = state([_claim(j, ds, 0) for j, ds in held.items()])
    for j in alone:
        mine = sorted(str(p) for k, p in cs.ledger.recorded().items() if k.startswith(f"claim:c{j}:"))
        assert mine == sorted(str(p) for k, p in fresh.ledger.recorded().items() if k.startswith(f"claim:c{j}:"))
