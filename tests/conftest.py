"""Shared test set-up: where the captured fixtures live inside the repository (tests/data/shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

# A copy of the project's shared/ fixtures kept in the repository, so a plain clone runs its tests.
SHARED = Path(__file__).resolve().parent / "data" / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    return SHARED
