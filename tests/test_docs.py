"""The README and docs/: every relative link points at a file that exists and, with a
#fragment, at a heading of that file (GitHub's anchor spelling); the README stays short."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = FENCE.sub("", page.read_text())
    out = set()
    for title in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def links(page: Path) -> list[str]:
    return [t for t in LINK.findall(FENCE.sub("", page.read_text())) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def test_readme_is_short_and_indexes_every_doc():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    linked = {Path(t.partition("#")[0]).name for t in links(ROOT / "README.md")}
    missing = [p.name for p in PAGES[1:] if p.name not in linked]
    assert not missing, f"README does not link {missing}"


def test_anchor_spelling():
    page = ROOT / "docs" / "latency.md"
    assert "where-the-time-goes-kernel-microbenchmarks" in anchors(page)


def walkthrough_block(name: str) -> str:
    """The code block under ``<!-- walkthrough: name -->`` in docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    found = re.search(rf"<!-- walkthrough: {name} -->\n```python\n(.*?)^```", text, re.M | re.S)
    assert found, f"docs/architecture.md has no walkthrough block {name!r}"
    return found.group(1)


def test_architecture_walkthrough_rule_and_its_test(monkeypatch):
    """The example rule of docs/architecture.md, built as the page says, passes the page's own test."""
    import exprune_onnx.rules

    rule = types.ModuleType("exprune_onnx.rules.flat_leaky_relu")
    exec(compile(walkthrough_block("rule"), "docs/architecture.md (rule)", "exec"), rule.__dict__)
    monkeypatch.setitem(sys.modules, rule.__name__, rule)
    monkeypatch.setattr(exprune_onnx.rules, "flat_leaky_relu", rule, raising=False)
    suite: dict = {}
    exec(compile(walkthrough_block("test"), "docs/architecture.md (test)", "exec"), suite)
    tests = [fn for name, fn in suite.items() if name.startswith("test_")]
    assert len(tests) == 2
    for test in tests:
        test()
