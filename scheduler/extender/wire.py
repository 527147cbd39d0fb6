"""The extender wire format (k8s.io/kube-scheduler/extender/v1), parsed and written with orjson.

The Go structs have no json tags, so keys are the Go field names (`Pod`, `NodeNames`, `Host`...).
Parsing checks only the shape gpupack relies on, and raises WireError (HTTP 400) otherwise; it
never builds pydantic models (a NodeList of 500 full Nodes must cost well under a millisecond).
Answers always carry every field of the result type, `null` where the Go side has a nil pointer,
exactly like the recorded answers in tests/data/shared/fixtures/extender.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

Obj = dict[str, Any]


class WireError(ValueError):
    """The body is not JSON or not the shape of the verb's arguments."""


class TooMany(WireError):
    """More nodes (or victims) than the configured cap (HTTP 413): the work per request stays bounded."""


MAX_NODES = 50_000  # the default cap on nodes per request; the largest real clusters have ~15,000 nodes
MAX_VICTIMS_PER_NODE = 4096  # a node runs a few hundred pods at most (kubelet maxPods)


def _cap(n: int, cap: int, what: str) -> None:
    if n > cap:
        raise TooMany(f"{n} {what}, more than the {cap} this extender accepts (setting max_nodes)")


def _load(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise WireError(f"body is not JSON: {e}") from None


def _obj(doc: Any, what: str) -> Obj:
    if not isinstance(doc, dict):
        raise WireError(f"{what} must be a JSON object, got {type(doc).__name__}")
    return doc


class ExtenderArgs:
    """filter/prioritize arguments: the pod and the node names, plus the Node objects in Nodes mode.

    In NodeNames mode as kube-scheduler sends it (compact JSON, NodeNames last), `raw` is the names
    array exactly as sent and `names` is parsed from it only when asked: a list seen before is
    recognised by comparing those bytes (tens of microseconds at 20,000 names), where parsing it
    costs about a millisecond and resolving its fresh strings more (docs/benchmarks.md)."""

    __slots__ = ("_max", "_names", "_opens", "items", "list_meta", "pod", "raw")

    def __init__(self, pod: Obj, names: list[str] | None, items: list[Obj] | None, list_meta: Obj,
                 raw: bytes | None = None, max_nodes: int = MAX_NODES) -> None:
        self.pod = pod
        self._names = names
        self.items = items  # None: NodeNames mode (nodeCacheCapable)
        self.list_meta = list_meta
        self.raw = raw
        self._max = max_nodes
        self._opens: np.ndarray | bool | None = False  # False: not looked at yet

    def plain(self) -> np.ndarray | None:
        """Where the names open in `raw` when it is an array of plain strings (plain_strings), the
        cap checked (413) without parsing; None otherwise."""
        if self._opens is False:
            opens = plain_strings(self.raw) if self.raw is not None else None
            if opens is not None:
                _cap(len(opens), self._max, "NodeNames")
            self._opens = opens
        return self._opens  # type: ignore[return-value]

    @property
    def names(self) -> list[str]:
        if self._names is None:
            raw = self.raw or b"[]"
            # each boundary between two strings is `","` (a quote inside a name is escaped): the cap
            # holds before anything is parsed (a list equal to one seen before is never parsed)
            _cap(raw.count(b'","') + (raw != b"[]"), self._max, "NodeNames")
            self._names = _names_list(_load(raw), self._max)
        return self._names


NAMES_KEY = b',"NodeNames":['


def _split(body: bytes) -> tuple[bytes, bytes] | None:
    """(the body without NodeNames, the NodeNames array as sent) when NodeNames is the last member of a
    compact body (`{...,"NodeNames":[...]}`, as Go's encoder writes ExtenderArgs), else None.

    Sound for any body: the first part is parsed as a whole JSON object, so the split point is a
    member of the outermost object; the array then either parses (and the body meant exactly this) or
    does not (and the body was not JSON: a 400 either way). A duplicate NodeNames key before it sends
    the body to the full parse, which keeps the last one as orjson does."""
    if not body.endswith(b"]}"):
        return None
    at = body.rfind(NAMES_KEY)
    if at <= 0:
        return None
    return body[:at] + b"}", body[at + len(NAMES_KEY) - 1:-1]


def plain_strings(raw: bytes) -> np.ndarray | None:
    """Where each string of a JSON array of plain strings (printable ASCII, no escape) opens: the
    offsets of their opening quotes, when `raw` is exactly such an array (then it is valid JSON and
    each name is the bytes between its quotes); None for anything else (the caller parses it)."""
    a = np.frombuffer(raw, np.uint8)
    if len(a) < 2 or a[0] != ord("[") or a[-1] != ord("]") or ((a < 0x20) | (a > 0x7E) | (a == ord("\\"))).any():
        return None
    q = np.flatnonzero(a == ord('"'))
    if len(q) == 0:
        return q if len(a) == 2 else None
    opens, closes = q[0::2], q[1::2]
    if len(q) % 2 or q[0] != 1 or q[-1] != len(a) - 2 or ((closes - opens) < 2).any():
        return None  # an odd quote, something before the first or after the last, an empty name
    gaps = opens[1:] - closes[:-1]
    if (gaps != 2).any() or (a[closes[:-1] + 1] != ord(",")).any():
        return None  # exactly one comma between two strings
    return opens


def _names_list(names: Any, max_nodes: int) -> list[str]:
    if not isinstance(names, list):  # the elements are checked once per distinct list (verdicts.Names)
        raise WireError("NodeNames must be a list of strings")
    _cap(len(names), max_nodes, "NodeNames")
    return names


def parse_args(body: bytes, max_nodes: int = MAX_NODES) -> ExtenderArgs:
    split = _split(body)
    if split is not None:
        try:
            head: Any = orjson.loads(split[0])
        except orjson.JSONDecodeError:
            head = None
        if isinstance(head, dict) and head and "NodeNames" not in head:
            return ExtenderArgs(_obj(head.get("Pod"), "Pod"), None, None, {}, split[1], max_nodes)
    doc = _obj(_load(body), "ExtenderArgs")
    pod = _obj(doc.get("Pod"), "Pod")
    names = doc.get("NodeNames")
    if names is not None:
        return ExtenderArgs(pod, _names_list(names, max_nodes), None, {})
    nodes: Any = doc.get("Nodes")
    if nodes is None:
        raise WireError("neither NodeNames nor Nodes is set")
    nodes = _obj(nodes, "Nodes")
    items = nodes.get("items") or []
    if not isinstance(items, list):
        raise WireError("Nodes.items must be a list")
    _cap(len(items), max_nodes, "Nodes.items")
    try:
        names = [n["metadata"]["name"] for n in items]
    except (KeyError, TypeError):
        raise WireError("every Nodes.items entry needs metadata.name") from None
    if not set(map(type, names)) <= {str}:
        raise WireError("Nodes.items[].metadata.name must be strings")
    meta = nodes.get("metadata")
    return ExtenderArgs(pod, names, items, meta if isinstance(meta, dict) else {})


def filter_result(args: ExtenderArgs, passed: Sequence[int], failed: Mapping[str, str],
                  unresolvable: Mapping[str, str], passed_names: list[str] | None = None,
                  passed_raw: bytes | None = None) -> bytes:
    """ExtenderFilterResult, in the form of the request (Nodes or NodeNames); `passed_raw`: the
    passed names already encoded (kept to recognise the list prioritize then gets)."""
    nodes: Obj | None = None
    names: list[str] | orjson.Fragment | None = None
    if args.items is None:
        if passed_raw is not None:
            names = orjson.Fragment(passed_raw)
        else:
            names = passed_names if passed_names is not None else [args.names[i] for i in passed]
    else:
        nodes = {"metadata": args.list_meta, "items": [args.items[i] for i in passed]}
    return orjson.dumps({"Nodes": nodes, "NodeNames": names, "FailedNodes": failed,
                         "FailedAndUnresolvableNodes": unresolvable, "Error": ""})


def filter_error(message: str, node_names_mode: bool = True) -> bytes:
    nodes: Obj | None = None if node_names_mode else {"metadata": {}, "items": []}
    return orjson.dumps({"Nodes": nodes, "NodeNames": None, "FailedNodes": {}, "FailedAndUnresolvableNodes": {},
                         "Error": message})


MAX_NAME = 253  # a node name is a DNS subdomain


def require_names(names: Sequence[object]) -> None:
    if not set(map(type, names)) <= {str}:
        raise WireError("node names must be strings")
    if names and max(map(len, names)) > MAX_NAME:  # type: ignore[arg-type]
        raise WireError(f"node names are at most {MAX_NAME} characters")


FULL_UP_TO = 256  # prioritize answers for up to this many nodes list every node (as the recorded answers do)


@dataclass(frozen=True, slots=True)
class HostList:
    """The node names a prioritize answer is about, in the order they were asked."""

    names: Sequence[str]


def score_part(name: str) -> bytes:
    """One HostPriority with a blank two-character Score: `{"Host":"<name>","Score":  }`."""
    return b'{"Host":' + orjson.dumps(name) + b',"Score":  }'


@dataclass(frozen=True, slots=True)
class ScoreTemplate:
    """A HostPriorityList with every Score a blank two-character field: `body` as bytes, and the end
    of each element in it (the blanks are the 3rd and 2nd bytes before that end)."""

    body: np.ndarray  # uint8: "[" part "," part ... "]"
    ends: np.ndarray  # index just past each part
    lens: np.ndarray


def score_template(parts: Sequence[bytes]) -> ScoreTemplate:
    """The template of these parts (see score_part): made once per distinct node list, then filled per
    request with two NumPy writes (whitespace before a one-digit score is plain JSON; the scheduler's
    decoder reads it as any other)."""
    lens = np.fromiter(map(len, parts), np.int64, len(parts))
    body = np.frombuffer(b"[" + b",".join(parts) + b"]", np.uint8).copy()
    return ScoreTemplate(body, np.cumsum(lens + 1), lens)


def sub_template(t: ScoreTemplate, keep: np.ndarray) -> ScoreTemplate:
    """The template of a subsequence of t's elements (ascending positions), cut out with one mask."""
    lens = t.lens[keep]
    if len(lens) == 0:
        return ScoreTemplate(np.frombuffer(b"[]", np.uint8).copy(), lens, lens)
    chosen = np.zeros(len(t.lens), bool)
    chosen[keep] = True
    inner = t.body[1:][np.repeat(chosen, t.lens + 1)]  # each element with the separator after it
    inner[-1] = ord("]")
    return ScoreTemplate(np.concatenate([t.body[:1], inner]), np.cumsum(lens + 1), lens)


def prioritize_result(hosts: HostList | ScoreTemplate, scores: np.ndarray) -> bytes:
    """HostPriorityList: a bare JSON array of {Host, Score}, scores 0..10.

    A ScoreTemplate (a node list seen before, in the same order) is filled in with two NumPy writes:
    every node, in order. A HostList of up to FULL_UP_TO nodes: every node in the order asked.
    Beyond, only the nodes scored above the lowest score, lowered by it: kube-scheduler adds
    weight x Score to a listed node's total and nothing to a node not listed (extender.go,
    prioritizeNodes), so taking the same amount off every node changes no total's rank, and at 5,000
    nodes the answer shrinks from ~160 KB, which kube-scheduler decodes into a map pod after pod, to
    the nodes that decide. One thing differs: kube-scheduler breaks an exact tie of totals at random
    only among listed nodes."""
    if isinstance(hosts, ScoreTemplate):
        out = hosts.body.copy()
        out[hosts.ends - 3] = np.where(scores >= 10, ord("1"), ord(" "))
        out[hosts.ends - 2] = ord("0") + scores % 10
        return out.tobytes()
    names = hosts.names
    if len(names) <= FULL_UP_TO:
        return orjson.dumps([{"Host": h, "Score": s} for h, s in zip(names, scores.tolist(), strict=True)])
    low = scores.min() if len(scores) else 0
    keep = np.flatnonzero(scores > low)
    return orjson.dumps([{"Host": names[i], "Score": s}
                         for i, s in zip(keep.tolist(), (scores[keep] - low).tolist(), strict=True)])


@dataclass(frozen=True, slots=True)
class BindingArgs:
    namespace: str
    name: str
    uid: str
    node: str


def parse_binding(body: bytes) -> BindingArgs:
    doc = _obj(_load(body), "ExtenderBindingArgs")
    vals = [doc.get(k) for k in ("PodNamespace", "PodName", "PodUID", "Node")]
    if not all(isinstance(v, str) for v in vals) or not all(vals[1:]):
        raise WireError("ExtenderBindingArgs needs strings PodName, PodNamespace, PodUID and Node")
    return BindingArgs(*vals)  # type: ignore[arg-type]


def binding_result(error: str) -> bytes:
    return orjson.dumps({"Error": error})


@dataclass(frozen=True, slots=True)
class Victim:
    """A proposed victim: its UID, and the full Pod when the scheduler sent one (Nodes mode)."""

    uid: str
    pod: Obj | None


@dataclass(frozen=True, slots=True)
class PreemptionArgs:
    pod: Obj
    victims: dict[str, tuple[list[Victim], int]]  # node -> (victims, NumPDBViolations)


def parse_preemption(body: bytes, max_nodes: int = MAX_NODES) -> PreemptionArgs:
    doc = _obj(_load(body), "ExtenderPreemptionArgs")
    pod = _obj(doc.get("Pod"), "Pod")
    full, meta = doc.get("NodeNameToVictims"), doc.get("NodeNameToMetaVictims")
    src, is_full = (full, True) if full is not None else (meta, False)
    if src is None:
        raise WireError("neither NodeNameToVictims nor NodeNameToMetaVictims is set")
    out: dict[str, tuple[list[Victim], int]] = {}
    src = _obj(src, "victims map")
    _cap(len(src), max_nodes, "nodes with victims")
    for node, v in src.items():
        v = _obj(v, f"victims of {node}")
        pods = v.get("Pods") or []
        if isinstance(pods, list):
            _cap(len(pods), MAX_VICTIMS_PER_NODE, f"victims on {node}")
        pdb = v.get("NumPDBViolations") or 0
        if not isinstance(pods, list) or not isinstance(pdb, int) or isinstance(pdb, bool) or not 0 <= pdb < 2**31:
            raise WireError(f"victims of {node}: Pods must be a list and NumPDBViolations an int32 >= 0")
        out[node] = ([_victim(node, p, is_full) for p in pods], pdb)
    return PreemptionArgs(pod, out)


def _victim(node: str, p: Any, is_full: bool) -> Victim:
    """One proposed victim: a full Pod (metadata and spec objects, a string UID) or a MetaPod (UID)."""
    if is_full:
        meta = p.get("metadata") if isinstance(p, dict) else None
        uid = meta.get("uid") if isinstance(meta, dict) else None
        if not isinstance(uid, str) or not isinstance(p.get("spec") or {}, dict):
            raise WireError(f"victims of {node}: every Pod needs an object metadata with a string uid, "
                            "and spec (if set) must be an object")
        return Victim(uid, p)
    uid = p.get("UID") if isinstance(p, dict) else None
    if not isinstance(uid, str):
        raise WireError(f"victims of {node}: every MetaPod needs a string UID")
    return Victim(uid, None)


def preemption_result(chosen: Mapping[str, tuple[Sequence[str], int]], error: str = "") -> bytes:
    """ExtenderPreemptionResult: always the meta form (UIDs), as kube-scheduler requires."""
    doc: Obj = {"NodeNameToMetaVictims": {
        node: {"Pods": [{"UID": u} for u in uids], "NumPDBViolations": pdb} for node, (uids, pdb) in chosen.items()
    }}
    if error:
        doc["Error"] = error  # not in the Go type (ignored there): for people reading a 400
    return orjson.dumps(doc)
