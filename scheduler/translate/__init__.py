"""Translation between Kubernetes JSON and binpack's types: the one edge every component reads through.

- pod.py: a Pod -> PodRequest (the demand, per-container asks, group, soft preferences); the
  extender, the webhook, the report and DRA read pods only through it.
- inventory.py: a Node (gpupack's inventory annotation, else GFD labels) -> binpack.Node, and back.
- devices.py: the `gpupack.io/devices` record a bind writes and the agent hands over.
- quantity.py: Kubernetes quantities ("500m", "16Gi") -> bounded integers.

Nothing here holds state or makes API calls; each module turns one Kubernetes shape into immutable
binpack values (or back) and rejects what it cannot read with a message (InvalidPod, InvalidInventory...).
"""
