"""The design lives in the repository: every "docs/design.md section N" cited names a section of docs/design.md,
and nothing cites the design notes kept outside it.

Standard library only: the sources are read as text.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
HEADING = re.compile(r"^## (\d+)\. \S", re.MULTILINE)
# a citation may wrap inside a docstring or a comment: "docs/design.md\n    # section 3"
CITATION = re.compile(r"docs/design\.md[\s#*]*sections?\s+(\d+)")
# the notes outside the repository were cited as "design section N" and by their path
OUTSIDE = re.compile(r"(?<![\w/.])design[\s#*]+sections?\s+\d|shared/design\.md|design notes shared", re.IGNORECASE)


def sources() -> dict[Path, str]:
    """The texts that may cite the design: the package, the benchmarks, the tests, the README, the top of docs/."""
    paths = [*ROOT.joinpath("qresnet").rglob("*.py"), *ROOT.joinpath("benchmarks").rglob("*.py"),
             *ROOT.joinpath("tests").rglob("*.py"), ROOT / "README.md",
             *(p for p in ROOT.joinpath("docs").glob("*") if p.suffix in (".md", ".ipynb") and p != DESIGN)]
    here = Path(__file__).resolve()
    return {p: p.read_text() for p in paths if p.resolve() != here}  # this file names the patterns it looks for


def sections(text: str) -> list[int]:
    """The numbers of the design's ``## N. Title`` headings, in order."""
    return [int(n) for n in HEADING.findall(text)]


def cited(text: str) -> list[int]:
    return [int(n) for n in CITATION.findall(text)]


def bad_citations(texts: dict[Path, str], existing: set[int]) -> list[str]:
    """One line per citation of a section that does not exist, or of the notes outside the repository."""
    out = []
    for path, text in sorted(texts.items()):
        name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        for number in cited(text):
            if number not in existing:
                out.append(f"{name} cites docs/design.md section {number}, which does not exist")
        for match in OUTSIDE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            out.append(f"{name}:{line} cites the design notes outside the repository ({match.group(0)!r})")
    return out


def test_design_sections_are_numbered_one_to_n():
    numbers = sections(DESIGN.read_text())
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    assert len(numbers) >= 2


def test_every_citation_names_a_section_and_none_cites_the_outside_notes():
    existing = set(sections(DESIGN.read_text()))
    assert bad_citations(sources(), existing) == []


def test_the_code_cites_the_design_where_it_leans_on_it():
    """Not vacuous: the package, the benchmarks, the tests and the README each cite it."""
    texts = sources()
    for place in ("qresnet", "benchmarks", "tests", "README.md"):
        found = [n for p, t in texts.items() if p.relative_to(ROOT).parts[0] == place for n in cited(t)]
        assert found, f"{place} cites no docs/design.md section"


def test_a_bad_citation_is_caught():
    fake = {ROOT / "qresnet" / "x.py": '"""See docs/design.md section 99, and docs/design.md\n    # section 2."""\n',
            ROOT / "benchmarks" / "y.py": "# the Design  section 5 workload, from ../shared/design.md\n"}
    assert cited(fake[ROOT / "qresnet" / "x.py"]) == [99, 2]
    assert bad_citations(fake, {1, 2}) == [
        "benchmarks/y.py:1 cites the design notes outside the repository ('Design  section 5')",
        "benchmarks/y.py:1 cites the design notes outside the repository ('shared/design.md')",
        "qresnet/x.py cites docs/design.md section 99, which does not exist",
    ]
    assert sections("## 1. One\ntext\n## 2. Two\n### 2.1 not a section\n") == [1, 2]
