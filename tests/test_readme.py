"""The README stays a two-minute read that does not lie about the tree: under 200 lines, every
relative link in it and in docs/ resolves (files, and #anchors to a heading that exists), and
every Markdown table has as many cells in each row as in its header."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("*/README.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        match = re.match(r"#+\s+(.*)", line)
        if match:
            text = re.sub(r"[`*_]", "", match.group(1)).strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return out


def outside_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < 200, f"README.md has {lines} lines; move detail to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(outside_code(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_the_anchor_rule_matches_github():
    page = ROOT / "README.md"
    assert "two-commands" in anchors(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_table_row_has_the_headers_cell_count(page):
    bad = []
    rows: list[str] = []
    for line in outside_code(page.read_text(encoding="utf-8")).splitlines() + [""]:
        if line.startswith("|"):
            rows.append(line)
            continue
        if len(rows) >= 2:
            cells = [len(re.split(r"(?<!\\)\|", r.strip().strip("|"))) for r in rows]
            bad += [rows[i] for i, n in enumerate(cells) if n != cells[0]]
        rows = []
    assert not bad, f"{page.relative_to(ROOT)}: rows whose cell count differs from the header: {bad[:3]}"
