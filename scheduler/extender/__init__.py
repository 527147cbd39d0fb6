"""The kube-scheduler extender HTTP service (k8s.io/kube-scheduler/extender/v1)."""
