"""The one log-level vocabulary of every gpupack command (serve, webhook, agent, bench).

Any case in ("INFO", "info", "Info"), lowercase out (uvicorn's spelling; `logging` takes `.upper()`),
and a message listing the levels otherwise. `gpupack agent` can call `log_level()` too.
"""

from __future__ import annotations

LEVELS = ("critical", "error", "warning", "info", "debug")
HELP = "critical, error, warning, info or debug (any case)"


def log_level(value: str) -> str:
    """The level in lowercase; ValueError naming the choices for anything else."""
    v = value.strip().lower()
    if v not in LEVELS:
        raise ValueError(f"must be one of {', '.join(LEVELS)} (any case); got {value!r}")
    return v
