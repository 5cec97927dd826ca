"""The README carries the sandbox's own README (headings one level down), so the two never disagree."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _demoted(text: str) -> list[str]:
    """`text`'s lines with every Markdown heading one level deeper (lines inside code fences left alone)."""
    lines, fenced = [], False
    for line in text.rstrip("\n").split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            line = "#" + line
        lines.append(line)
    return lines


def test_readme_sandbox_section_is_the_sandbox_readme() -> None:
    readme = (ROOT / "README.md").read_text().split("\n")
    start = readme.index("### The sandbox clouds")
    end = readme.index("## Development")
    section = readme[start:end]
    while section and not section[-1].strip():
        section.pop()
    expected = _demoted((ROOT / "sandbox" / "README.md").read_text())
    assert section == expected, (
        "README.md's sandbox section differs from sandbox/README.md: edit sandbox/README.md and copy it into"
        " README.md with every heading one level deeper"
    )
