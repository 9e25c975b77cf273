"""Code and docs point at sections of docs/*.md (``docs/webhooks.md#headers``): each such
pointer names a file and a heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POINTER = re.compile(r"\b(?:docs/)?([a-z_]+)\.md#([a-z0-9-]+)")
LINK = re.compile(r"\]\(#([a-z0-9-]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    return {
        _anchor(line.lstrip("#"))
        for line in doc.read_text().splitlines()
        if re.match(r"#{1,6} ", line)
    }


def test_every_pointer_to_a_docs_section_resolves() -> None:
    docs = {p.stem: _anchors(p) for p in (ROOT / "docs").glob("*.md")}
    sources = [*(ROOT / "src").rglob("*.py"), *(ROOT / "docs").glob("*.md"), ROOT / "README.md"]
    broken = []
    for source in sources:
        text = source.read_text()
        for name, anchor in POINTER.findall(text):
            if name in docs and anchor not in docs[name]:
                broken.append(f"{source.relative_to(ROOT)}: {name}.md#{anchor}")
        if source.suffix == ".md" and source.stem in docs:
            broken += [
                f"{source.relative_to(ROOT)}: #{anchor}"
                for anchor in LINK.findall(text)
                if anchor not in docs[source.stem]
            ]
    assert not broken, "pointers to no heading:\n" + "\n".join(broken)
