"""`gpupack report` and `gpupack explain`: read-only views of a live cluster or a `kubectl get -o json` dump."""
