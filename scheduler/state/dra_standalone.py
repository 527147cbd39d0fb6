"""DRA objects in a `--cluster FILE`: ResourceSlices and ResourceClaims beside the Nodes and Pods.

The file is the one standalone.py reads: a Kubernetes List whose items may also be of kind
ResourceSlice / ResourceClaim, or the short form with `resourceSlices: [...]` and
`resourceClaims: [...]` next to `nodes` and `pods`. Objects are taken as the API server stores them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import orjson
import yaml

from scheduler.state.kubeapi import Obj
from scheduler.state.standalone import InvalidCluster


def load_dra_objects(path: str | Path) -> tuple[list[Obj], list[Obj]]:
    """(resource slices, resource claims) from a YAML/JSON cluster file; both empty when it has none."""
    p = Path(path)
    try:
        text = p.read_bytes()
        doc = orjson.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (OSError, orjson.JSONDecodeError, yaml.YAMLError) as e:
        raise InvalidCluster(f"{p}: {e}") from None
    if not isinstance(doc, Mapping):
        return [], []
    if "items" in doc:
        items = [o for o in doc.get("items") or [] if isinstance(o, Mapping)]
        slices = [o for o in items if o.get("kind") == "ResourceSlice"]
        claims = [o for o in items if o.get("kind") == "ResourceClaim"]
    else:
        slices, claims = list(doc.get("resourceSlices") or []), list(doc.get("resourceClaims") or [])
    for kind, objs, needs in (("resourceSlices", slices, "name"), ("resourceClaims", claims, "uid")):
        for i, o in enumerate(objs):
            meta = o.get("metadata") if isinstance(o, Mapping) else None
            if not isinstance(meta, Mapping) or not meta.get("name") or not meta.get(needs):
                raise InvalidCluster(f"{p}: {kind}[{i}]: an object with metadata.name and metadata.{needs} is needed")
    return [dict(o) for o in slices], [dict(o) for o in claims]
