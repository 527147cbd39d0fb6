"""The one log-level vocabulary of every gpupack command (serve, webhook, agent, bench).

Any case in ("INFO", "info", "Info"), lowercase out (uvicorn's spelling; `logging` takes `.upper()`),
and a message listing the levels otherwise. `gpupack agent` can call `log_level()` too.
"""

from __future__ import annotations

LEVELS = ("critical", "error", "warning", "info", "debug")
HELP = "critical, error, warning, info or debug (any case)"


def log_level(value: str) -> str:
    """The level in lowercase; ValueError naming the choices for anything else."""
    return lowercase_choice(value, LEVELS, " (any case)")


def lowercase_choice(value: str, choices: tuple[str, ...], note: str = "") -> str:
    """`value` stripped and lowercased if it is one of `choices`; ValueError naming them otherwise
    (the log level and the log format read their settings this one way)."""
    v = value.strip().lower()
    if v not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}{note}; got {value!r}")
    return v
