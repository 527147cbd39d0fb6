"""The Kubernetes API as gpupack needs it: a small protocol and its kubernetes-client implementation.

Only this module (and memapi.py, its in-memory twin) talks to an API server. Objects travel as
plain camelCase dicts parsed with orjson (`_preload_content=False` everywhere), never as the
client's models: they are what scheduler/translate/pod.py and inventory.py read, and far cheaper.
Every call carries a timeout, so nothing here can hang the extender.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote

import orjson

Obj = dict[str, Any]


class ApiError(Exception):
    """A failed API call: HTTP status (0 when no answer came), reason and message."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def ambiguous(self) -> bool:
        """Whether the call may have taken effect: no answer (timeout, reset), a server error (an etcd
        timeout can still commit) or 408. Any other 4xx is a refusal: nothing was changed."""
        return not (400 <= self.status < 500 and self.status != 408)


class ApiTimeout(ApiError):
    """No answer within the timeout: the call may or may not have taken effect."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message, "Timeout")


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One watch event: ADDED, MODIFIED, DELETED, BOOKMARK or ERROR (then `obj` is a Status)."""

    type: str
    obj: Obj

    @property
    def resource_version(self) -> str:
        return str((self.obj.get("metadata") or {}).get("resourceVersion") or "")


class WatchStream(Protocol):
    """An iterator of watch events that another thread may close to end it early."""

    def __iter__(self) -> Iterator[WatchEvent]: ...

    def close(self) -> None: ...


class KubeApi(Protocol):
    """What gpupack asks of the API server."""

    def list_nodes(self) -> tuple[list[Obj], str]: ...

    def list_pods(self) -> tuple[list[Obj], str]: ...

    def watch_nodes(self, resource_version: str, timeout_s: int) -> WatchStream: ...

    def watch_pods(self, resource_version: str, timeout_s: int) -> WatchStream: ...

    def get_pod(self, namespace: str, name: str) -> Obj | None: ...

    def create_binding(self, namespace: str, name: str, uid: str, node: str,
                       annotations: Mapping[str, str] | None = None) -> None:
        """POST a Binding (the UID guards against a recreated pod). Its metadata.annotations are merged into
        the pod in the same write as nodeName, so a pod is never bound without them."""


@runtime_checkable
class DraApi(Protocol):
    """What observe-mode DRA asks of the API server (resource.k8s.io/v1); a 404 on list means no DRA."""

    def list_resource_slices(self) -> tuple[list[Obj], str]: ...

    def list_resource_claims(self) -> tuple[list[Obj], str]: ...

    def watch_resource_slices(self, resource_version: str, timeout_s: int) -> WatchStream: ...

    def watch_resource_claims(self, resource_version: str, timeout_s: int) -> WatchStream: ...

    def get_resource_claim(self, namespace: str, name: str) -> Obj | None: ...


class _HttpWatch:
    """Lines of a streaming watch response, parsed with orjson."""

    def __init__(self, resp: Any) -> None:
        self._resp = resp

    def __iter__(self) -> Iterator[WatchEvent]:
        try:
            for line in self._resp:
                if line.strip():
                    doc = orjson.loads(line)
                    yield WatchEvent(str(doc.get("type", "")), doc.get("object") or {})
        except Exception as e:  # a read timeout or reset mid-stream: the watcher re-watches
            raise _translate(e) from None
        finally:
            self._resp.release_conn()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already closed
            self._resp.shutdown()  # wakes a thread blocked in recv (urllib3 >= 2.3)


def _translate(e: Exception) -> ApiError:
    """The client's and urllib3's exceptions as ApiError; timeouts as ApiTimeout."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError, TimeoutError

    if isinstance(e, ApiError):
        return e
    if isinstance(e, ApiException):
        return _status_error(int(e.status or 0), e.body, str(e.reason or ""))
    if isinstance(e, ReadTimeoutError | TimeoutError):
        return ApiTimeout(str(e))
    if isinstance(e, MaxRetryError) and isinstance(e.reason, ReadTimeoutError | TimeoutError):
        return ApiTimeout(str(e))
    if isinstance(e, MaxRetryError | ProtocolError | OSError):
        return ApiError(0, str(e), "Unreachable")
    return ApiError(0, f"{type(e).__name__}: {e}", "ClientError")


def _status_error(status: int, body: bytes | str | None, reason: str = "") -> ApiError:
    """A non-2xx answer as ApiError, with the reason and message of the Status it carries."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    try:
        doc = orjson.loads(body or b"{}")
    except (orjson.JSONDecodeError, TypeError):
        doc = None
    doc = doc if isinstance(doc, dict) else {}
    return ApiError(status, str(doc.get("message") or text or reason), str(doc.get("reason") or reason))


class KubernetesApi:
    """KubeApi over the official kubernetes client; no retries inside (the callers decide)."""

    page = 500  # list in chunks, so a big cluster's list is never one huge response

    def __init__(self, kubeconfig: str | None = None, in_cluster: bool = False, timeout_s: float = 5.0) -> None:
        import urllib3
        from kubernetes import client, config

        cfg = client.Configuration()
        if in_cluster:
            config.load_incluster_config(client_configuration=cfg)
        else:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        cfg.retries = 0  # a retried POST could bind twice; bind has its own confirm step
        self._client = client.ApiClient(cfg)
        self._core = client.CoreV1Api(self._client)
        self._resource = client.ResourceV1Api(self._client)  # DRA, resource.k8s.io/v1
        self._timeout = timeout_s
        self._post_timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        """One request/response call; the body is read (`.data` keeps it) and the connection released to
        the pool: an unreleased response keeps its connection, and the next call pays a new TLS handshake
        (23% of gpupack's CPU under a real kube-scheduler, docs/benchmarks.md)."""
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=(self._timeout, self._timeout), **kw)
            resp.data  # noqa: B018 (reads the whole body, which the response keeps)
        except Exception as e:
            raise _translate(e) from None
        release = getattr(resp, "release_conn", None)
        if release is not None:
            release()
        return resp

    def _write(self, fn: Any, *args: Any, **kw: Any) -> None:
        """A call whose answer is not needed."""
        self._call(fn, *args, **kw)

    def _list(self, fn: Any) -> tuple[list[Obj], str]:
        items: list[Obj] = []
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"limit": self.page}
            if token:
                kw["_continue"] = token
            resp = self._call(fn, **kw)
            doc = orjson.loads(resp.data)
            items.extend(doc.get("items") or [])
            meta = doc.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    def list_nodes(self) -> tuple[list[Obj], str]:
        return self._list(self._core.list_node)

    def list_pods(self) -> tuple[list[Obj], str]:
        return self._list(self._core.list_pod_for_all_namespaces)

    def _watch(self, fn: Any, rv: str, timeout_s: int) -> WatchStream:
        try:
            resp = fn(watch=True, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=timeout_s,
                      _preload_content=False, _request_timeout=(self._timeout, timeout_s + self._timeout))
        except Exception as e:
            raise _translate(e) from None
        return _HttpWatch(resp)

    def watch_nodes(self, resource_version: str, timeout_s: int) -> WatchStream:
        return self._watch(self._core.list_node, resource_version, timeout_s)

    def watch_pods(self, resource_version: str, timeout_s: int) -> WatchStream:
        return self._watch(self._core.list_pod_for_all_namespaces, resource_version, timeout_s)

    def list_resource_slices(self) -> tuple[list[Obj], str]:
        return self._list(self._resource.list_resource_slice)

    def list_resource_claims(self) -> tuple[list[Obj], str]:
        return self._list(self._resource.list_resource_claim_for_all_namespaces)

    def watch_resource_slices(self, resource_version: str, timeout_s: int) -> WatchStream:
        return self._watch(self._resource.list_resource_slice, resource_version, timeout_s)

    def watch_resource_claims(self, resource_version: str, timeout_s: int) -> WatchStream:
        return self._watch(self._resource.list_resource_claim_for_all_namespaces, resource_version, timeout_s)

    def get_resource_claim(self, namespace: str, name: str) -> Obj | None:
        try:
            resp = self._call(self._resource.read_namespaced_resource_claim, name, namespace)
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        doc: Obj = orjson.loads(resp.data)
        return doc

    def update_resource_claim(self, namespace: str, name: str, obj: Obj) -> Obj:
        """PUT the claim (its finalizers); the body's resourceVersion makes a concurrent change a 409."""
        doc: Obj = orjson.loads(self._call(self._resource.replace_namespaced_resource_claim, name, namespace,
                                           obj).data)
        return doc

    def update_resource_claim_status(self, namespace: str, name: str, obj: Obj) -> Obj:
        """PUT resourceclaims/status (allocate mode: needs update on resourceclaims/binding, cluster-wide)."""
        doc: Obj = orjson.loads(self._call(self._resource.replace_namespaced_resource_claim_status, name,
                                           namespace, obj).data)
        return doc

    def get_pod(self, namespace: str, name: str) -> Obj | None:
        try:
            resp = self._call(self._core.read_namespaced_pod, name, namespace)
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        doc: Obj = orjson.loads(resp.data)
        return doc

    def create_event(self, namespace: str, body: Obj) -> None:
        """A core/v1 Event (scheduler/events.py writes them on pods)."""
        self._write(self._core.create_namespaced_event, namespace, body)

    def create_binding(self, namespace: str, name: str, uid: str, node: str,
                       annotations: Mapping[str, str] | None = None) -> None:
        meta: Obj = {"name": name, "namespace": namespace, "uid": uid}
        if annotations:
            meta["annotations"] = dict(annotations)
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": meta,
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        # where CoreV1Api.create_namespaced_binding posts, without its model classes and argument checks
        self._post("create_namespaced_binding", f"/api/v1/namespaces/{quote(namespace, safe='')}/bindings",
                   orjson.dumps(body))

    def _post(self, call: str, path: str, body: bytes) -> None:
        """POST a JSON body through the client's own connection pool and credentials, past its generated
        method: bind is on every pod's path, and the models and pydantic argument checks cost about as
        much as the HTTP call itself (py-spy under a real kube-scheduler, docs/benchmarks.md). A non-2xx
        answer is an ApiError carrying the Status's reason and message, as for the generated calls.
        `call`: the generated method this stands for (what RBAC must allow: tests/test_manifests_rbac.py
        reads it), named in an error without a message of its own."""
        api = self._client
        headers = {"Accept": "application/json", "Content-Type": "application/json", "User-Agent": api.user_agent}
        api.update_params_for_auth(headers, [], ["BearerToken"], path, "POST", body)  # a rotated token is re-read
        try:
            resp = api.rest_client.pool_manager.request(
                "POST", api.configuration.host + path, body=body, headers=headers, retries=False,
                timeout=self._post_timeout, preload_content=False)
            data = resp.data
            resp.release_conn()
        except Exception as e:
            raise _translate(e) from None
        if not 200 <= resp.status < 300:
            raise _status_error(int(resp.status), data, f"{call}: HTTP {resp.status}")
