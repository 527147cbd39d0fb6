"""Shared test set-up: where ../shared is, and a clear failure when it is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"../shared is missing (looked for {SHARED}): the fixtures, trace and reference live there")
    return SHARED
