"""The node agent: discovers a node's GPUs through NVML and publishes them as the node's
`gpupack.io/gpu-inventory` annotation; with dynamic MIG on, it also creates and destroys the MIG
instances that the extender chose at bind.

pynvml is imported only here (scheduler/agent/nvml.py), and always through one seam: every
function takes the NVML module as an argument, so tests pass a fake (scheduler/agent/fake_nvml.py).
"""
