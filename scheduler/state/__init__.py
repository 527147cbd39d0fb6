"""Cluster state: the Kubernetes API behind a small protocol, list/watch, the ledger and the bind transaction."""
