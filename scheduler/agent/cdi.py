"""CDI specs on the node: which fully qualified device names (`nvidia.com/gpu=<UUID>`) exist.

The device plugin hands devices to the runtime by CDI name, and a name the runtime cannot resolve
makes container creation fail ("unresolvable CDI devices"). So at start, and before advertising a
device, the agent reads the spec folders the runtimes read (`/etc/cdi`, `/var/run/cdi`, written by
the GPU Operator or `nvidia-ctk cdi generate`) and says which advertised devices no spec names.
A spec is a YAML or JSON file with `kind` ("vendor/class") and `devices[].name`; a file that cannot
be read is a note, never a crash (the runtime would skip it too).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import yaml

DEFAULT_DIRS = ("/etc/cdi", "/var/run/cdi")
NVIDIA_KIND = "nvidia.com/gpu"
_MAX_SPEC_BYTES = 16 * 1024 * 1024  # a spec for 8 GPUs with MIG is tens of KiB; a huge file is a mistake


@dataclass(frozen=True, slots=True)
class CdiSpecs:
    """Every qualified device name found, the files read, and one note per file that was skipped."""

    names: frozenset[str] = frozenset()
    files: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def missing(self, wanted: Iterable[str]) -> list[str]:
        """The wanted qualified names that no spec defines, in the order given."""
        return [n for n in wanted if n not in self.names]


def qualified(kind: str, device: str) -> str:
    """The CDI name of one device: `vendor/class=name`."""
    return f"{kind}={device}"


def _parse(path: Path) -> tuple[list[str], str]:
    """(qualified names, note) for one spec file."""
    try:
        if path.stat().st_size > _MAX_SPEC_BYTES:
            return [], f"{path}: larger than {_MAX_SPEC_BYTES} bytes, skipped"
        raw = path.read_bytes()
        doc = orjson.loads(raw) if path.suffix == ".json" else yaml.safe_load(raw)
    except (OSError, orjson.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as e:
        return [], f"{path}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str) or "=" in doc["kind"]:
        return [], f"{path}: not a CDI spec (no 'kind' of the form vendor/class)"
    devices = doc.get("devices")
    if not isinstance(devices, list):
        return [], f"{path}: CDI spec without a 'devices' list"
    kind = doc["kind"]
    names = [qualified(kind, str(d["name"])) for d in devices
             if isinstance(d, dict) and d.get("name") not in (None, "")]
    return names, ""


def read_specs(dirs: Sequence[str | Path] = DEFAULT_DIRS) -> CdiSpecs:
    """Read every `*.yaml`, `*.yml` and `*.json` file of the folders (a missing folder is fine)."""
    names: set[str] = set()
    files: list[str] = []
    notes: list[str] = []
    for d in dirs:
        folder = Path(d)
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
                continue
            found, note = _parse(path)
            if note:
                notes.append(note)
                continue
            files.append(str(path))
            names.update(found)
    return CdiSpecs(frozenset(names), tuple(files), tuple(notes))


__all__ = ["DEFAULT_DIRS", "NVIDIA_KIND", "CdiSpecs", "qualified", "read_specs"]
