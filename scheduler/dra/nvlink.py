"""NVLink on DRA nodes: NVIDIA's DRA driver publishes no NVLink attribute (only `pcieRoot`), so the links come
from gpupack's agent when it also runs on the node: its inventory annotation lists every GPU's UUID with the
NVLink link counts between them. The slices' GPUs are matched to the agent's by UUID (the driver publishes the
same NVML UUIDs); a GPU the agent does not list has no known links. Without the agent, a node's NVLink topology
is unknown (all zero): allocate mode then refuses an NVLink ask there with a reason (allocate.py), and the
`matchAttribute: resource.kubernetes.io/pcieRoot` constraint is what a claim can ask instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from binpack import Gpu, Node

Matrix = tuple[tuple[int, ...], ...]
NVLINK_ANNOTATION = "gpupack.io/topology"  # on a ResourceClaim (or its template): "nvlink" asks NVLink-connected GPUs


def nvlink_by_uuid(agent: Node, gpus: Sequence[Gpu]) -> Matrix:
    """The NVLink link counts between the slices' GPUs, taken from the agent's node by GPU UUID (0 where a GPU
    is unknown to the agent or has no UUID)."""
    at = {g.uuid: g.index for g in agent.gpus if g.uuid}
    idx = [at.get(g.uuid) if g.uuid else None for g in gpus]
    return tuple(tuple(0 if i == j or a is None or b is None else int(agent.nvlink[a][b])
                       for j, b in enumerate(idx)) for i, a in enumerate(idx))


def known(m: Matrix) -> bool:
    """Whether any NVLink is known on the node."""
    return any(any(row) for row in m)
