"""A plain clone runs its tests alone: the captured fixtures are inside the repository, and no code
reaches for a folder beside the clone (CI also runs the suite from an export with nothing beside it)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
# Ways code has reached outside the clone: a "../shared" path, a Path("..") join, or climbing past
# the repository root (parents[1] is the root from tests/, its .parent is beside the clone).
OUTSIDE = re.compile(r"""["']\.\./shared|Path\(\s*["']\.\.["']|parents\[\d+\]\.parent\b|os\.pardir""")


def test_fixtures_live_inside_the_repository() -> None:
    assert SHARED.resolve().is_relative_to(ROOT)
    for sub in ("extender", "webhook", "apiserver", "outcomes"):
        folder = SHARED / "fixtures" / sub
        assert any(folder.glob("*.json")), sub
        assert (folder / "README.md").read_text().count("copied unchanged") == 1, sub
    assert (SHARED / "fixtures" / "scheduler-config-nodecache-true.yaml").is_file()


def test_no_code_reads_beside_the_clone() -> None:
    this = Path(__file__).resolve()
    offenders = []
    for pkg in ("tests", "benchmarks", "scheduler", "webhook", "binpack"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            if f.resolve() == this:
                continue
            for n, line in enumerate(f.read_text().splitlines(), 1):
                if OUTSIDE.search(line):
                    offenders.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []


def test_the_pattern_catches_the_old_ways() -> None:
    for bad in ('SHARED = Path(__file__).resolve().parents[1].parent / "shared"',
                "open('../shared/fixtures/x.json')", 'Path("..") / "shared" / "traces"'):
        assert OUTSIDE.search(bad), bad
    assert not OUTSIDE.search('"""Facts come from ../shared/reference/mig.md."""')
