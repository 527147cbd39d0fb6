"""The one log format of every long-running gpupack command (serve, webhook, agent): `--log-format json|text`.

Each line carries the pod and node it is about when the call site knows them, passed as
`log.info(..., extra=about(pod="ns/name", node="n1"))`; a process that is about one node (the agent)
names it once with `setup(..., node=...)`. uvicorn's loggers (its errors and, when switched on, its
access log) are routed through the same handler, so a collector parses one format per component.

    text: 2026-12-06T01:02:03.456Z INFO gpupack.bind: bind failed: ... pod=ml/train-0 node=dgx-0
    json: {"time":"2026-12-06T01:02:03.456Z","level":"info","logger":"gpupack.bind","msg":"bind failed: ...",
           "pod":"ml/train-0","node":"dgx-0"}   (one line)
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any, TextIO

import orjson

from scheduler.loglevel import lowercase_choice

FORMATS = ("text", "json")
HELP = "text (human) or json (one object per line, for a log collector)"
_FIELDS = ("pod", "node")  # what a line is about, when known
_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access")
_HANDLER = "gpupack"


def log_format(value: str) -> str:
    """The format in lowercase; ValueError naming the choices for anything else."""
    return lowercase_choice(value, FORMATS)


def about(pod: str = "", node: str = "") -> dict[str, str]:
    """`extra=` for a log call: the pod (namespace/name) and node the line is about."""
    return {k: v for k, v in (("pod", pod), ("node", node)) if v}


def _time(record: logging.LogRecord) -> str:
    t = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _access(record: logging.LogRecord) -> dict[str, Any]:
    """uvicorn's access record (args: client, method, path, HTTP version, status) as fields."""
    args = record.args
    if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
        client, method, path, _version, status = args
        return {"client": str(client), "method": str(method), "path": str(path), "status": int(str(status))}
    return {}


class _Node(logging.Filter):
    """Names the process's node on every line that does not name one."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "node", ""):
            record.node = self.node
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"time": _time(record), "level": record.levelname.lower(), "logger": record.name,
                               "msg": record.getMessage()}
        for k in _FIELDS:
            if v := getattr(record, k, ""):
                doc[k] = str(v)
        doc.update(_access(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_time(record)} {record.levelname} {record.name}: {record.getMessage()}"
        tail = " ".join(f"{k}={v}" for k in _FIELDS if (v := getattr(record, k, "")))
        if tail:
            line += " " + tail
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (a test runner swaps it), as logging's lastResort does."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def setup(level: str, fmt: str = "text", node: str = "", stream: TextIO | None = None) -> logging.Handler:
    """Route the root logger and uvicorn's loggers to one handler in `fmt`; returns the handler."""
    handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.setFormatter(JsonFormatter() if log_format(fmt) == "json" else TextFormatter())
    if node:
        handler.addFilter(_Node(node))
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    for h in list(root.handlers):  # ours from an earlier call (others', e.g. pytest's capture, stay)
        if h.get_name() == _HANDLER:
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _UVICORN:  # uvicorn's own config is switched off (log_config=None): they propagate here
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        lg.setLevel(level.upper())
    return handler
