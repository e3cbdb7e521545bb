"""The repo's theory document: every citation of a section of docs/theory.md names one of its headings, and no
file cites the design notes that are not part of a clone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THEORY = ROOT / "docs" / "theory.md"
SCANNED = ("ssl_pipeline", "tests", "scripts", "benchmarks", "configs", "README.md")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".sh"}
# The theory document's path, optionally a comma, then one or more quoted section names separated by commas;
# a name may be wrapped across lines of a docstring.
CITATION = re.compile(r"docs/theory\.md,?\s*((?:\"[^\"]+\"(?:\s*,\s*)?)+)")
SECTION = re.compile(r"\"([^\"]+)\"")
OLD_NOTES = "DESIGN" + ".md"


def headings(markdown: str) -> set[str]:
    """The text of every Markdown heading (``#`` to ``######``) outside fenced code blocks."""
    found, fenced = set(), False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", line)):
            found.add(match.group(1))
    return found


def cited_sections(text: str) -> list[str]:
    """The section names cited as docs/theory.md followed by quoted names, whitespace inside a name collapsed."""
    return [" ".join(name.split()) for match in CITATION.finditer(text) for name in SECTION.findall(match.group(1))]


def scanned_files() -> list[Path]:
    files = []
    for entry in SCANNED:
        path = ROOT / entry
        files += [path] if path.is_file() else [p for p in sorted(path.rglob("*")) if p.suffix in SUFFIXES and p.is_file()]
    return files


def unresolved_citations(files: list[Path], known: set[str]) -> list[str]:
    return [f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {name!r}" for path in files
            for name in cited_sections(path.read_text(encoding="utf-8", errors="replace")) if name not in known]


def test_every_cited_section_is_a_heading_of_the_theory_document():
    files = scanned_files()
    citations = sum(len(cited_sections(p.read_text(encoding="utf-8", errors="replace"))) for p in files)
    assert citations >= 30, f"found only {citations} section citations; has the citation form changed?"
    assert unresolved_citations(files, headings(THEORY.read_text(encoding="utf-8"))) == []


def test_no_file_cites_the_design_notes_outside_the_repo():
    offenders = [str(p.relative_to(ROOT)) for p in scanned_files()
                 if OLD_NOTES in p.read_text(encoding="utf-8", errors="replace")]
    assert offenders == []


def test_citation_parser_finds_wrapped_and_missing_sections(tmp_path):
    doc = "docs/theory" + ".md"  # not written out, so this file does not cite these sections itself
    source = tmp_path / "module.py"
    source.write_text(f'"""A ({doc}, "GMM checks\n    on real features", "InfoNCE"); B ({doc} "No such")."""\n'
                      f'# {doc} without a section, and a quote later: "ignored"\n')
    assert cited_sections(source.read_text()) == ["GMM checks on real features", "InfoNCE", "No such"]
    missing = unresolved_citations([source], {"GMM checks on real features", "InfoNCE"})
    assert missing == [f"{source}: 'No such'"]
