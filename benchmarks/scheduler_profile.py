"""Where a py-spy recording's time goes: the top functions by self and by total samples.

py-spy's raw format is one line per distinct stack: `frame;frame;...;leaf COUNT`, outermost first,
each frame `function (file:line)`. Line numbers are dropped so a function counts once.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")


def _name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip()
    fn, path = m.groups()
    for marker in ("site-packages/", "/work/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{fn} ({path})"


def top_frames(raw: str, n: int = 20) -> dict[str, Any]:
    """{"samples": total, "self": [(function, share %)...], "total": [(function, share %)...]}."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        m = _LINE.match(line.strip())
        if m is None:
            continue
        stack, count = m.group(1), int(m.group(2))
        names = [_name(f) for f in stack.split(";") if f]
        if not names:
            continue
        total += count
        own[names[-1]] += count
        for name in set(names):
            incl[name] += count
    pct = (lambda c: round(100.0 * c / total, 1)) if total else (lambda c: 0.0)
    return {"samples": total, "self": [(k, pct(v)) for k, v in own.most_common(n)],
            "total": [(k, pct(v)) for k, v in incl.most_common(n)]}
