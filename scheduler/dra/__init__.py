"""Dynamic Resource Allocation (resource.k8s.io/v1) with NVIDIA's DRA driver `gpu.nvidia.com`, observe mode.

kube-scheduler's DynamicResources plugin allocates devices; gpupack reads ResourceSlices as a node
inventory (slices.py), counts every allocated ResourceClaim's devices as taken (claims.py,
ledger.py), turns a claim-only pod's requests into a binpack Demand (demand.py), and at bind adopts
the devices the claim got (bind.py). docs/dra.md says what works and how to configure it.
"""
