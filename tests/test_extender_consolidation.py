"""Prioritize keeps one node alone at 10, and it is the node bind's packing prefers.

kube-scheduler picks at random among nodes with equal totals; if several nodes shared the top
score, its random pick would undo the consolidation that gpupack's float scores encode."""

from pathlib import Path

from extender_support import args, fixture_nodes, pod, post, serve


def test_one_node_alone_at_ten_and_bind_fills_it(shared: Path) -> None:
    nodes = fixture_nodes(shared)
    names = ["gpu-node-a", "gpu-node-b", "gpu-node-c"]
    pods = [pod(f"p{i}", {"nvidia.com/gpu": "1"}) for i in range(6)]
    with serve(nodes, pods) as (client, _, _):
        chosen = []
        for p in pods:
            scores = post(client, "prioritize", args(p, names))
            tops = [s["Host"] for s in scores if s["Score"] == 10]
            assert len(tops) == 1 and all(0 <= s["Score"] <= 10 for s in scores)
            best = tops[0]
            meta = p["metadata"]
            assert post(client, "bind", {"PodName": meta["name"], "PodNamespace": meta["namespace"],
                                         "PodUID": meta["uid"], "Node": best}) == {"Error": ""}
            chosen.append(best)
        # identical empty nodes: the same node keeps winning until it is full (consolidation)
        assert len(set(chosen)) == 1
