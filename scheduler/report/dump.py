"""Where the report's Nodes and Pods come from: a `kubectl get nodes,pods -A -o json` dump, or a
kubeconfig (list only, with a progress bar). Nothing here writes to a cluster.

A dump is a v1 List (or a NodeList / PodList, or a bare list of objects); items are sorted into
nodes and pods by `kind`. A kubeconfig whose context cannot list nodes or pods cluster-wide is
refused with a message saying which permission is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

Obj = dict[str, Any]
PAGE = 500  # objects per list call: the apiserver's own default chunk for kubectl


class DumpError(ValueError):
    """The dump or the cluster cannot be read; the message says why and what to do."""


@dataclass(frozen=True)
class Dump:
    """The cluster's objects as listed (one moment's picture; nothing is watched)."""

    nodes: tuple[Obj, ...]
    pods: tuple[Obj, ...]
    source: str


def _items(doc: Any, where: str) -> list[Obj]:
    if isinstance(doc, list):
        return [x for x in doc if isinstance(x, dict)]
    if isinstance(doc, dict) and isinstance(doc.get("items"), list):
        return [x for x in doc["items"] if isinstance(x, dict)]
    if isinstance(doc, dict) and doc.get("kind") in ("Node", "Pod"):
        return [doc]
    raise DumpError(f"{where}: not a v1 List; make it with `kubectl get nodes,pods -A -o json > dump.json`")


def split(items: list[Obj], source: str, list_kind: str = "") -> Dump:
    """Nodes and pods of a list; a NodeList's / PodList's items may omit `kind`."""
    nodes, pods = [], []
    for o in items:
        kind = o.get("kind") or list_kind
        if kind == "Node":
            nodes.append(o)
        elif kind == "Pod":
            pods.append(o)
    if not nodes:
        raise DumpError(f"{source}: no Node in it; include nodes: `kubectl get nodes,pods -A -o json`")
    return Dump(tuple(nodes), tuple(pods), source)


def load(path: Path) -> Dump:
    """Read a dump file (JSON)."""
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as e:
        raise DumpError(f"{path}: {e.strerror or e}") from None
    except orjson.JSONDecodeError as e:
        raise DumpError(f"{path}: not JSON ({e}); write it with -o json") from None
    kind = str(doc.get("kind", "")).removesuffix("List") if isinstance(doc, dict) else ""
    return split(_items(doc, str(path)), str(path), kind)


Tick = Callable[[str, int], None]  # (what, objects listed so far)


def from_kubeconfig(kubeconfig: Path | None, context: str | None = None, tick: Tick | None = None) -> Dump:
    """List nodes and pods (every namespace) page by page; DumpError when the context may not."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    try:
        api_client = config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None,
                                                   context=context)
    except Exception as e:  # the loader raises several types for a missing or broken file
        raise DumpError(f"kubeconfig {kubeconfig or '~/.kube/config'}: {e}") from None
    core = client.CoreV1Api(api_client)
    out: dict[str, list[Obj]] = {}
    for what, call in (("nodes", core.list_node), ("pods", core.list_pod_for_all_namespaces)):
        items: list[Obj] = []
        token = None
        while True:
            try:
                resp: Any = call(limit=PAGE, _continue=token, _preload_content=False, _request_timeout=60)
            except ApiException as e:
                if e.status in (401, 403):
                    raise DumpError(f"this context may not list {what} in every namespace (HTTP {e.status}): "
                                    f"gpupack report needs `list` on {what} cluster-wide, e.g. the "
                                    "`view` ClusterRole; or pass --from a dump") from None
                raise DumpError(f"listing {what}: HTTP {e.status} {e.reason}") from None
            except Exception as e:  # connection refused, TLS, timeouts
                raise DumpError(f"listing {what}: {e}") from None
            page = orjson.loads(resp.data)
            items += page.get("items") or []
            if tick is not None:
                tick(what, len(items))
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
        out[what] = items
    return split([{**n, "kind": "Node"} for n in out["nodes"]] + [{**p, "kind": "Pod"} for p in out["pods"]],
                 f"kubeconfig {kubeconfig or '~/.kube/config'}")
