"""A plain clone runs its tests alone: the captured fixtures are inside the repository, and no code
reaches for a folder beside the clone (CI also runs the suite from an export with nothing beside it)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
# Ways code has reached outside the clone: a path up into the folder beside it (even in prose, since
# a file it cites must be in the clone too), a Path("..") join, or climbing past the repository root
# (parents[1] is the root from tests/, its .parent is beside the clone). The folder's name is spelled
# in pieces here so that this file does not name it.
NAME = "sh" + "ared"
BESIDE = "." * 2 + "/" + NAME
OUTSIDE = re.compile(re.escape(BESIDE) + r"""|Path\(\s*["']\.\.["']|parents\[\d+\]\.parent\b|os\.pardir""")


def test_fixtures_live_inside_the_repository() -> None:
    assert SHARED.resolve().is_relative_to(ROOT)
    for sub in ("extender", "webhook", "apiserver", "outcomes"):
        folder = SHARED / "fixtures" / sub
        assert any(folder.glob("*.json")), sub
        assert (folder / "README.md").read_text().count("copied unchanged") == 1, sub
    assert (SHARED / "fixtures" / "scheduler-config-nodecache-true.yaml").is_file()


def test_no_code_reads_beside_the_clone() -> None:
    # code, docs and manifests; not tests/data or benchmarks/data (copies and captures, with their own notes)
    files = [f for pkg in ("tests", "benchmarks", "scheduler", "webhook", "binpack", "docs", "manifests")
             for f in sorted((ROOT / pkg).rglob("*")) if f.suffix in (".py", ".md", ".yaml", ".sh")
             and "data" not in f.relative_to(ROOT).parts[:2] and f.resolve() != Path(__file__).resolve()]
    offenders = [f"{f.relative_to(ROOT)}:{n}: {line.strip()}"
                 for f in [*files, ROOT / "README.md", ROOT / "Dockerfile", ROOT / ".ci" / "run"]
                 for n, line in enumerate(f.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert offenders == []


def test_the_pattern_catches_the_old_ways() -> None:
    # the planted lines are assembled from pieces too, so that this file itself names no such path
    climb, up = "parents[1]" + ".parent", "Path(" + '"' + "." * 2 + '")'
    for bad in (f'SHARED = Path(__file__).resolve().{climb} / "{NAME}"',
                f"open('{BESIDE}/fixtures/x.json')", f'{up} / "{NAME}" / "traces"',
                f"Facts come from {BESIDE}/reference/mig.md."):
        assert OUTSIDE.search(bad), bad
    assert not OUTSIDE.search('"""Facts come from tests/data/shared/reference/mig.md."""')


def test_cited_reference_files_are_in_the_clone() -> None:
    cited = set()
    for f in [*ROOT.glob("*/**/*.py"), *ROOT.glob("docs/*.md"), ROOT / "README.md"]:
        cited.update(re.findall(r"tests/data/shared/[\w/.-]+\.(?:md|json|yaml)", f.read_text()))
    assert cited, "nothing cites the copied reference"
    missing = sorted(c for c in cited if not (ROOT / c).is_file())
    assert missing == []
