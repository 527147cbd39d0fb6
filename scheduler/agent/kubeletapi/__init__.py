"""kubelet's gRPC APIs, generated from the vendored .proto files (see README.md here).

Constants are copied from k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/constants.go (v1.36.2).
"""

VERSION = "v1beta1"
DEVICE_PLUGIN_PATH = "/var/lib/kubelet/device-plugins"
KUBELET_SOCKET = "kubelet.sock"
POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
