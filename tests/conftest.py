"""Shared test set-up: where the captured fixtures live inside the repository (tests/data/shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.state.locks import check_order

# every lock made from here on refuses to be taken out of order (scheduler/state/locks.py): a wrong order
# fails the test that takes it, instead of deadlocking one day under load
check_order(True)

# A copy of the project's shared/ fixtures kept in the repository, so a plain clone runs its tests.
SHARED = Path(__file__).resolve().parent / "data" / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    return SHARED


_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave with pytest's own verdict once everything is reported. One full run of the suite crashed
    (SIGSEGV) in interpreter teardown after every test had passed, with native threads of gRPC / OR-Tools
    still alive; the verdict was already final, so teardown is skipped rather than let it turn a pass
    into a failure. Only the main pytest process does this (not a plain import of this file)."""
    if _exit_status and not hasattr(config, "workerinput"):
        import os
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[0])
