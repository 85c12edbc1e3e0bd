"""Every ```python block of README.md and docs/*.md runs as written.

The blocks of one page run in order in one namespace (a page reads as one session), from a
scratch folder where ``../shared/data`` is the real-data folder (``$SPARSE_RTRL_DATA`` or
shared/data beside the repository), so the paths the pages show work as shown. A block is
left out only when the line above it says why:

- ``<!-- snippet: needs shared data -->``: it reads the shared recordings (skipped, with the
  fresh-clone message, when they are absent);
- ``<!-- snippet: not run (reason) -->``: it needs the user's own files or minutes of compute.
"""

import os
import re
from pathlib import Path

import pytest
import torch

from shared_data import ORIGIN, SHARED, absent_reason

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)```", re.S)
MARK = re.compile(r"<!-- snippet: (?P<what>[^>]*?) -->")


def blocks(page: Path):
    """(line, marker or None, code) of each python block of ``page``."""
    text = page.read_text()
    for m in BLOCK.finditer(text):
        mark = MARK.search(m.group("before"))
        yield text[: m.start("code")].count("\n"), mark.group("what") if mark else None, m.group("code")


@pytest.fixture
def registries():
    """A page may register a task, a rule or a cell of its own: the registries are restored
    after it, so no other test sees them."""
    from sparse_rtrl.cells import CELLS
    from sparse_rtrl.tasks import TASKS
    from sparse_rtrl.transport import RULES

    saved = [(r, dict(r)) for r in (TASKS, RULES, CELLS)]
    yield
    for registry, content in saved:
        registry.clear()
        registry.update(content)


@pytest.mark.parametrize("page", [p for p in PAGES if any(True for _ in blocks(p))], ids=lambda p: p.name)
def test_python_blocks_run(page, tmp_path, monkeypatch, registries):
    work = tmp_path / "work"
    work.mkdir()
    if SHARED.is_dir():
        (tmp_path / "shared").mkdir()
        (tmp_path / "shared" / "data").symlink_to(SHARED, target_is_directory=True)
    monkeypatch.chdir(work)
    monkeypatch.delenv("SPARSE_RTRL_DATA", raising=False)  # the pages' defaults, as a user has them
    torch.manual_seed(0)
    namespace: dict = {"__name__": f"snippets_of_{page.stem}"}
    skipped = []
    for line, mark, code in blocks(page):
        if mark is not None and mark.startswith("not run"):
            continue
        if mark == "needs shared data" and not SHARED.is_dir():
            skipped.append(line)
            continue
        assert mark in (None, "needs shared data"), f"{page.name}:{line}: unknown snippet marker {mark!r}"
        try:
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)
        except Exception as exc:  # name the page and line the reader would copy from
            raise AssertionError(f"{page.relative_to(ROOT)}, block at line {line}: "
                                 f"{type(exc).__name__}: {exc}") from exc
    if skipped:
        pytest.skip(f"blocks at lines {skipped} of {page.name}: {absent_reason(*ORIGIN)}")


def test_every_marker_is_known_and_names_its_reason():
    for page in PAGES:
        for line, mark, _ in blocks(page):
            if mark is not None:
                assert mark == "needs shared data" or re.fullmatch(r"not run \(.+\)", mark), (page.name, line, mark)
    assert os.path.isfile(ROOT / "docs" / "data.md")  # where the skip messages point


def test_readme_says_the_quick_profile_time_holds_on_an_idle_machine():
    text = " ".join((ROOT / "README.md").read_text().split())
    assert re.search(r"(about|under) 10 minutes on 2 idle cores", text), "the 10 minutes were measured on idle cores"
    assert re.search(r"loaded machine it takes longer, 35 minutes", text)
