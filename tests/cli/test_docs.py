"""Every relative link in README.md and docs/ points at a file that exists.

The site build (`mkdocs build --strict`, a CI step) checks links between the pages in
docs/ too, anchors included; this runs without mkdocs and covers README.md as well.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def relative_links(text: str) -> list[str]:
    """The targets of the Markdown links in ``text`` that are paths, outside code."""
    text = INLINE_CODE.sub("", FENCE.sub("", text))
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # a URL (https:, mailto:, ...) or an anchor in the same page
        targets.append(target.split("#", 1)[0])
    return targets


def test_pages_found() -> None:
    assert len(PAGES) > 5


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    missing = [t for t in relative_links(page.read_text(encoding="utf-8")) if not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(REPO)} links to missing files: {missing}"


def test_link_parser() -> None:
    text = "[a](b.md#x) [c](https://e.org) [d](#y) `[e](f.md)`\n```\n[g](h.md)\n```\n![i](img/j.png)"
    assert relative_links(text) == ["b.md", "img/j.png"]
