"""The trace loaders: shipped files as published, and a clear TraceError on every malformed file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from benchmarks.trace import SHIPPED_NODES, SHIPPED_PODS, TraceError, data_dir, load_nodes, load_pods, load_trace

NODES_OK = "sn,cpu_milli,memory_mib,gpu,model\nn0,32000,131072,2,T4\nn1,8000,65536,0,\n"
PODS_HEAD = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"


def _write(tmp_path: Path, text: str, name: str = "f.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# sha256 of the files as published in Alibaba's cluster-trace-gpu-v2023 (openb), pinned here so the
# check needs nothing outside the clone.
PUBLISHED = {
    "openb_node_list_gpu_node.csv": "2beca64b4d3dfa342036a34b56a495c6cef9225db836c81f541282cb1df320b5",
    "openb_pod_list_default.csv": "1ee7ed79c27a3b0861cda8ddba86a004c6aba904caafa329a76ae93ca63834a8",
    "openb_pod_list_gpushare40.csv": "d83ce79a4eb6987524bedbb0c65e41aed3a36bf6c1b78b86234c3687a07e1d40",
    "openb_pod_list_gpuspec33.csv": "eca4f746db1e5b25864ad021b55ece3943e101a3ebd4574d09dcb95c46117652",
    "openb_pod_list_multigpu50.csv": "206f2f5959db30ecb7c44e7f13197c8ec50b7a35558ad3777cc3662ef0fe5373",
}


def test_shipped_trace_is_the_published_one() -> None:
    names = list(SHIPPED_NODES.values()) + list(SHIPPED_PODS.values())
    assert sorted(names) == sorted(PUBLISHED)
    for name in names:
        assert hashlib.sha256((data_dir() / name).read_bytes()).hexdigest() == PUBLISHED[name], name
    assert (data_dir() / "README.md").read_text().count("Beware of Fragmentation") == 1


def test_shipped_tables() -> None:
    nodes, pods = load_trace("openb", "default")
    assert len(nodes.names) == 1213 and int(nodes.gpus.sum()) == 6212
    assert len(pods.cpu) == 8152 and pods.specs == (frozenset(),)
    multi = load_trace("openb", "multigpu50")[1]  # no gpu_spec column at all
    assert len(multi.cpu) == 9061 and multi.specs == (frozenset(),)
    spec = load_trace("openb", "gpuspec33")[1]
    assert frozenset({"V100M16", "V100M32"}) in spec.specs
    assert set(nodes.models) >= {"G2", "G3", "T4", "P100", "V100M16", "V100M32", "A10"}


def test_a_node_without_gpus_has_no_model(tmp_path: Path) -> None:
    t = load_nodes(_write(tmp_path, NODES_OK))
    assert t.names == ("n0", "n1") and list(t.gpus) == [2, 0] and t.model[1] == -1
    assert t.capacity_milli == 2000


def test_pods_parse_shares_specs_and_cpu_tasks(tmp_path: Path) -> None:
    p = load_pods(_write(tmp_path, PODS_HEAD + "a,1000,100,1,300,T4|P100\nb,2000,0,0,0,\nc,500,10,4,1000,\n"))
    assert list(p.num_gpu) == [1, 0, 4] and list(p.milli) == [300, 0, 1000]
    assert list(p.gpu_milli) == [300, 0, 4000]
    assert p.specs[int(p.spec[0])] == frozenset({"T4", "P100"}) and p.specs[int(p.spec[1])] == frozenset()


@pytest.mark.parametrize(("text", "words"), [
    ("sn,cpu_milli,gpu,model\nn0,1,1,T4\n", "missing column(s) memory_mib"),
    ("", "missing column(s) sn"),
    ("sn,cpu_milli,memory_mib,gpu,model\n", "no rows after the header"),
    ("sn,cpu_milli,memory_mib,gpu,model\nn0,lots,1,1,T4\n", ":2: column cpu_milli: 'lots' is not an integer"),
    ("sn,cpu_milli,memory_mib,gpu,model\nn0,1,1,17,T4\n", ":2: column gpu: 17 is outside 0..16"),
    ("sn,cpu_milli,memory_mib,gpu,model\nn0,1,1,2,\n", "column model: a node with 2 GPUs needs its GPU model"),
    ("sn,cpu_milli,memory_mib,gpu,model\nn0,1,1,1,T4\nn0,1,1,1,T4\n", ":3: column sn: node 'n0' appears twice"),
    ("sn,cpu_milli,memory_mib,gpu,model\nn0,1,1,0,\n", "no node has a GPU"),
])
def test_malformed_node_lists(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(TraceError) as e:
        load_nodes(_write(tmp_path, text))
    assert words in str(e.value) and "f.csv" in str(e.value)


@pytest.mark.parametrize(("rows", "words"), [
    ("a,1,1,1,1001,\n", ":2: column gpu_milli: 1001 is outside 0..1000"),
    ("a,1,1,1,0,\n", "column gpu_milli: a task with 1 GPU(s) needs gpu_milli 1..1000"),
    ("a,1,1,2,500,\n", "column gpu_milli: 500 on a 2-GPU task; only 1-GPU tasks share"),
    ("a,1,1,-1,0,\n", "column num_gpu: -1 is outside 0..16"),
    ("a,1,1.5,1,100,\n", "column memory_mib: '1.5' is not an integer"),
    ("a,,1,1,100,\n", "column cpu_milli: '' is not an integer"),
])
def test_malformed_pod_lists(tmp_path: Path, rows: str, words: str) -> None:
    with pytest.raises(TraceError) as e:
        load_pods(_write(tmp_path, PODS_HEAD + rows))
    assert words in str(e.value)


def test_missing_pod_columns_are_named(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"missing column\(s\) num_gpu, gpu_milli; header is name,cpu_milli"):
        load_pods(_write(tmp_path, "name,cpu_milli,memory_mib\na,1,1\n"))


def test_unknown_names_and_paths(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"not a shipped name .*default.* and no such file"):
        load_trace("openb", "nonesuch")
    with pytest.raises(TraceError, match="node list"):
        load_trace(str(tmp_path / "missing.csv"), "default")
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(TraceError, match="cannot be read"):
        load_nodes(binary)
