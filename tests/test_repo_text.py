"""The repository's text speaks to its users: no development log, no links to files that are not there.

Scanned: every Markdown, YAML, TOML, CFF and shell file, and the comments and string literals (docstrings, help texts,
generated Markdown) of every Python file. Two checks:

- chronology: words that date a passage in the history of the work (numbered work sessions or stages, issue numbers,
  a default named by when it held, the current day, "since" a past event, calendar dates);
- links: Markdown links to files (and to headings) that do not exist, and repository paths named in any of that text
  (`docs/...`, `benchmarks/...`, ..., `README.md`) that do not exist.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", ".cache", "__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist", "outputs"}
TEXT_SUFFIXES = {".md", ".yaml", ".yml", ".toml", ".cff", ".sh"}

#: Each pattern names a way a passage dates itself; matched case-insensitively.
CHRONOLOGY: dict[str, str] = {
    "a numbered work session": r"\bsessions?\s+\d",
    "a numbered stage or phase of the work": r"\b(?:stages?|phases?)\s+\d",
    "an issue or pull-request number": r"\b(?:issues?|PRs?|pull requests?)\s+#?\d+|(?<![\w&/#])#\d{1,5}\b(?![\w-])",
    "a default named by when it held": (
        r"\b(?:previous|old|new|earlier|former|then)\s+defaults?\b"
        r"|\bdefaults?\s+(?:now|then|of that time|at the time|before the)\b"
        r"|\bthe default (?:since|until)\b"
    ),
    "the current day": r"\btoday(?:'s)?\b",
    "since a past event": (
        r"\bsince\s+(?:sessions?|issues?|stages?|then|the\s+(?:fix|change|rewrite|refactor))\b|\bsince[.;)]"
    ),
    "a result kept for history": r"\bfor history\b|\bpredates?\b|\bnot been rerun\b",
    "a calendar date": r"\b20\d\d-[01]\d-[0-3]\d\b",
}
#: Repository paths named in text: they must exist (a `*` is a glob).
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:benchmarks|docs|envs|examples|scripts|tests|trl_lead|\.ci)/[\w./*-]*[\w*]"
    r"|(?:README|CHANGELOG|DESIGN|CONTRIBUTING)\.md|LICENSE|CITATION\.cff|pyproject\.toml)(?![\w/-])"
)
#: Paths outside this repository that its text names on purpose
OUTSIDE = {"tests/test_sft_trainer.py"}  # TRL's own test file (benchmarks/dropin_suite.py)
#: A README section named in text, as README "Section"
README_SECTION = re.compile(r"README \"([^\"]+)\"")
GYM_ID = re.compile(r"trl_lead/\w+-v\d+")  # environment ids, not paths
MARKDOWN_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _files() -> list[Path]:
    found = []
    for path in sorted(ROOT.rglob("*")):
        parts = path.relative_to(ROOT).parts
        if any(p in SKIP_DIRS or p.endswith(".egg-info") or p == "lead-demo" for p in parts[:-1]):
            continue
        if path == Path(__file__).resolve():
            continue  # its strings are the patterns and their test data, checked by the known-answer tests below
        if path.is_file() and (path.suffix in TEXT_SUFFIXES or path.suffix == ".py"):
            found.append(path)
    return found


def _text_of(path: Path) -> list[tuple[int, str]]:
    """(line, text) pieces a reader sees: the whole file, or a Python file's comments and string literals."""
    source = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        return [(i + 1, line) for i, line in enumerate(source.splitlines())]
    pieces = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.STRING):
            for offset, line in enumerate(token.string.splitlines()):
                pieces.append((token.start[0] + offset, line))
    return pieces


def chronology_hits(path: Path, root: Path = ROOT) -> list[str]:
    hits = []
    for line_number, text in _text_of(path):
        for what, pattern in CHRONOLOGY.items():
            match = re.search(pattern, text, flags=re.IGNORECASE)
            if match:
                hits.append(f"{path.relative_to(root)}:{line_number}: {what}: {match.group(0)!r} in {text.strip()!r}")
    return hits


def _slug(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings (lowercase, punctuation dropped, spaces as hyphens,
    repeats numbered), plus explicit `<a id=...>` / `<a name=...>`."""
    anchors, seen = set(), {}
    in_code = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading and not in_code:
            slug = _slug(heading.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    anchors.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", markdown))
    return anchors


def _exists(base: Path, target: str) -> bool:
    if "*" in target:
        return any(base.glob(target))
    return (base / target).exists()


def link_hits(path: Path, root: Path = ROOT) -> list[str]:
    hits = []
    where = path.relative_to(root)
    pieces = _text_of(path)
    if path.suffix == ".md":
        markdown = path.read_text(encoding="utf-8")
        for line_number, line in enumerate(markdown.splitlines(), start=1):
            for target in MARKDOWN_LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.IGNORECASE):
                    continue  # http(s), mailto: not checked offline
                file_part, _, anchor = target.partition("#")
                linked = (path.parent / file_part) if file_part else path
                if not linked.exists():
                    hits.append(f"{where}:{line_number}: link to a missing file: {target}")
                elif anchor and linked.suffix == ".md":
                    if anchor not in github_anchors(linked.read_text(encoding="utf-8")):
                        hits.append(f"{where}:{line_number}: link to a missing heading: {target}")
    readme = root / "README.md"
    sections = github_anchors(readme.read_text(encoding="utf-8")) if readme.exists() else set()
    for line_number, text in pieces:
        for section in README_SECTION.findall(text):
            if _slug(section) not in sections:
                hits.append(f"{where}:{line_number}: names a README section that does not exist: {section}")
        for match in REPO_PATH.finditer(text):
            named = match.group(1)
            if GYM_ID.fullmatch(named) or named in OUTSIDE:
                continue
            if re.search(r"(--out|->)\s+$", text[: match.start()]):
                continue  # where a command will write its output
            if not _exists(root, named.rstrip(".")):
                hits.append(f"{where}:{line_number}: names a path that does not exist: {named}")
    return hits


def test_no_chronology_in_docs_docstrings_or_help_texts():
    hits = [hit for path in _files() for hit in chronology_hits(path)]
    assert not hits, "text that dates itself (say what is, not when it changed):\n" + "\n".join(hits)


def test_no_links_or_paths_to_missing_files():
    hits = [hit for path in _files() for hit in link_hits(path)]
    assert not hits, "links or repository paths that do not resolve:\n" + "\n".join(hits)


# The dated examples are assembled from their words, so that this file holds no dated text for a plain grep of the
# repository to find
_WORKLOG_WORDS = {"s": "session", "i": "issue", "p": "previous"}


@pytest.mark.parametrize(
    "text, flagged",
    [
        ("the default of {s} 6".format(**_WORKLOG_WORDS), True),
        ("measured in {s}s 5-6".format(**_WORKLOG_WORDS), True),
        ("{i} 12's goal".format(**_WORKLOG_WORDS), True),
        ("see #14", True),
        ("the {p} default lost".format(**_WORKLOG_WORDS), True),
        ("LEAD with today's defaults", True),
        ("the rows have not been rerun since.", True),
        ("Measured 2026-11-29.", True),
        ("the defaults now: prompt groups", True),
        ("stage 3 of the work", True),
        # not chronology
        ("since the model is tiny, the run is short", False),
        ("the default: prompt groups, the keep from the budget", False),
        ("a colour #1f77b4 and `[1/4]` progress steps", False),
        ("the LEAD session of a user", False),
        ("the paper's issue with top-IDU", False),
    ],
)
def test_chronology_patterns_flag_dated_text_and_spare_plain_text(tmp_path, text, flagged):
    """The patterns themselves, on text whose answer is known."""
    probe = tmp_path / "probe.md"
    probe.write_text(text + "\n", encoding="utf-8")
    assert bool(chronology_hits(probe, root=tmp_path)) is flagged


def test_link_checker_finds_missing_files_and_headings(tmp_path):
    """Known answers: a missing file, a missing heading and a missing named path are found; existing ones are not."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "design.md").write_text("# Design\n\n## The round protocol\n", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\n## Quick start\n\n"
        "[ok](docs/design.md) [ok](docs/design.md#the-round-protocol) [ok](#quick-start) "
        "[web](https://example.org/x)\n"
        "[bad](docs/results.md) [bad](docs/design.md#rounds) [bad](#results)\n"
        "see `benchmarks/missing.py` and docs/design.md; `run --out benchmarks/new_run` writes a new file\n",
        encoding="utf-8",
    )
    hits = link_hits(readme, root=tmp_path)
    assert not any(ok in h for h in hits for ok in ("the-round-protocol", "#quick-start", "example.org")), hits
    assert any("docs/results.md" in h for h in hits)
    assert any("docs/design.md#rounds" in h for h in hits)
    assert any("#results" in h for h in hits)
    assert any("benchmarks/missing.py" in h for h in hits)
