"""What the code's comments and docstrings, the TOML comments, the README and docs/ say about the repository is
true: every ``ibnbench/...`` path (and ``tests/``, ``benchmarks/``, ``docs/``, ... path) exists, every dotted
``ibnbench.x.y`` name resolves, and every "Table N" of the IBN-Net paper exists and, where the text says what the
table holds, is the table that holds it."""
from __future__ import annotations

import importlib
import importlib.util
import io
import re
import tokenize
from pathlib import Path

import pytest
from helpers.shared import SHARED

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PAPER_TOML = ROOT / "ibnbench" / "reference" / "ibn_net_paper.toml"
PAPER_MD = SHARED / "paper" / "ibn-net-tables.md"

PATH = re.compile(r"(?<![\w/.-])(?:ibnbench|tests|benchmarks|docs|transforms|datasets|leaderboards)/[\w./*-]*[\w*]")
DOTTED = re.compile(r"(?<![\w/.-])ibnbench(?:\.[A-Za-z_]\w*)+")
# "Table 4", "Table-1", "Tables 1-5", "Tables 4 and 5", "Tables 1, 2, 4, 5"
TABLES = re.compile(r"\bTables?[ -](\d+(?:(?:\s*-\s*|,\s*|\s+and\s+)\d+)*)")
# What each paper table holds, in the words of its title (checked below against the paper's headings), with the
# names ibnbench gives the same thing ("stages": the models' ``ibn_cfg`` and ``_stages`` names).
SUBJECTS = {1: ("appearance",), 2: ("architectures",), 3: ("variants",), 4: ("groups", "stages"), 5: ("ratio",)}
CLAUSE_END = re.compile(r"[:;)\0]|\.\s|\n\s*\n")
TEXT_TOKENS = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}


def _python_text(path: Path) -> str:
    """A module's comments and string literals (its docstrings among them) where they stand, the code blanked
    out (lines kept, so line numbers hold) and each literal ended by a NUL, so that no clause runs into the next."""
    source = path.read_text()
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    chars = [c if c == "\n" else " " for c in source]
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in TEXT_TOKENS:
            begin, end = starts[token.start[0] - 1] + token.start[1], starts[token.end[0] - 1] + token.end[1]
            chars[begin:end] = source[begin:end]
            if end < len(chars) and chars[end] != "\n":
                chars[end] = "\0"
    return "".join(chars)


def _toml_text(path: Path) -> str:
    return path.read_text()


def sources() -> dict[str, str]:
    """``{repository path: the text whose mentions must be true}``."""
    found = {p: _python_text(p) for p in sorted((ROOT / "ibnbench").rglob("*.py"))}
    for folder in ("transforms", "datasets", "ibnbench/reference"):
        found.update({p: _toml_text(p) for p in sorted((ROOT / folder).glob("*.toml"))})
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        found[page] = page.read_text()
    return {str(p.relative_to(ROOT)): text for p, text in found.items()}


SOURCES = sources()


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _path_exists(mention: str) -> bool:
    mention = mention.rstrip(".")
    if "*" in mention:
        return any(ROOT.glob(mention))
    return (ROOT / mention).exists()


def _package_dirs() -> set[str]:
    """Packages the wheel maps from folders outside ``ibnbench/`` (``ibnbench.transforms``: ``transforms/``)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(pyproject["tool"]["setuptools"].get("package-dir", {}))


def _resolves(dotted: str) -> bool:
    """Whether ``ibnbench.a.b.c`` is a module, or an attribute chain on the longest importable module prefix."""
    if dotted in _package_dirs():
        return True
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            continue
        target = importlib.import_module(name)
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def test_the_scan_sees_mentions():
    """Guard against a scan that silently finds nothing (a broken pattern would pass every test below)."""
    text = "\n".join(SOURCES.values())
    assert len(PATH.findall(text)) > 5 and len(DOTTED.findall(text)) > 50 and len(TABLES.findall(text)) > 20


def test_every_ibnbench_path_mentioned_exists():
    wrong = [f"{name}:{_line(text, m.start())}: {m.group()}" for name, text in SOURCES.items()
             for m in PATH.finditer(text) if not _path_exists(m.group())]
    assert not wrong, "paths that do not exist:\n" + "\n".join(wrong)


def test_every_dotted_ibnbench_name_resolves():
    wrong = [f"{name}:{_line(text, m.start())}: {m.group()}" for name, text in SOURCES.items()
             for m in DOTTED.finditer(text) if not _resolves(m.group())]
    assert not wrong, "names that do not resolve:\n" + "\n".join(wrong)


def paper_titles() -> dict[int, str]:
    """The paper's tables by number, with their titles, from ``ibnbench/reference/ibn_net_paper.toml``."""
    tables = tomllib.loads(PAPER_TOML.read_text())["tables"]
    return {int(number): table["title"] for number, table in tables.items()}


def test_the_subjects_are_the_paper_s():
    """Each table's subject word is in its title, in the reference TOML and in the paper's transcription."""
    titles = paper_titles()
    assert set(SUBJECTS) == set(titles)
    for number, words in SUBJECTS.items():
        assert words[0] in titles[number].lower(), (number, titles[number])
        assert not any(words[0] in titles[other].lower() for other in titles if other != number)
    if not PAPER_MD.is_file():
        pytest.skip(f"{PAPER_MD} is absent: the check against the transcription needs ../shared")
    headings = dict(re.findall(r"^## Table (\d+): (.*)$", PAPER_MD.read_text(), re.M))
    for number, words in SUBJECTS.items():
        assert words[0] in headings[str(number)].lower(), (number, headings[str(number)])


def _numbers(listed: str) -> list[int]:
    """``"1-5"`` -> 1..5; ``"4 and 5"``, ``"1, 2, 4"`` -> the numbers listed."""
    if "-" in listed:
        first, last = (int(n) for n in listed.split("-"))
        return list(range(first, last + 1))
    return [int(n) for n in re.findall(r"\d+", listed)]


def _subject_tables(clause: str) -> list[int]:
    """The tables whose subject words appear in ``clause``, in the order they appear."""
    hits = sorted((m.start(), number) for number, words in SUBJECTS.items() for word in words
                  for m in re.finditer(re.escape(word), clause, re.I))
    return [number for _, number in hits]


def _clauses(text: str) -> list[tuple[list[int], str, str, int]]:
    """``(numbers listed, the text before the mention, the text after it, offset)`` for each "Table N" mention of
    ``text``: before from the clause's start (or the previous mention), after to its end (or the next mention)."""
    mentions = list(TABLES.finditer(text))
    found = []
    for i, m in enumerate(mentions):
        lower = mentions[i - 1].end() if i else 0
        upper = mentions[i + 1].start() if i + 1 < len(mentions) else len(text)
        cuts = [c.end() for c in CLAUSE_END.finditer(text, lower, m.start())]
        stop = CLAUSE_END.search(text, m.end(), upper)
        before, after = text[cuts[-1] if cuts else lower:m.start()], text[m.end():stop.start() if stop else upper]
        found.append((_numbers(m.group(1)), before, after, m.start()))
    return found


def table_mentions():
    """``(where, numbers listed, tables whose subject the clause names)`` for every "Table N" mention: the subjects
    named before it in its clause ("IN ratios (Table 5)"), else those named after it ("Table 4, which stages")."""
    for name, text in SOURCES.items():
        if name == str(PAPER_TOML.relative_to(ROOT)):
            continue  # the transcription itself: its titles are the reference the others are checked against
        for numbers, before, after, offset in _clauses(text):
            yield f"{name}:{_line(text, offset)}", numbers, _subject_tables(before) or _subject_tables(after)


def test_every_table_mentioned_exists():
    titles = paper_titles()
    wrong = [f"{where}: Table {n}" for where, numbers, _ in table_mentions() for n in numbers if n not in titles]
    assert not wrong, "tables the paper does not have:\n" + "\n".join(wrong)


def test_every_table_mentioned_holds_what_the_text_says():
    """A clause that names a table's subject ("IN ratio", "stages", "variants", ...) names that table; a list of
    tables after a list of subjects pairs them in order."""
    wrong = []
    for where, numbers, subjects in table_mentions():
        if not subjects:
            continue
        if len(numbers) == 1 and set(subjects) != set(numbers):
            wrong.append(f"{where}: Table {numbers[0]} beside the subject of Table(s) {sorted(set(subjects))}")
        elif len(numbers) > 1 and len(subjects) == len(numbers) and subjects != numbers:
            wrong.append(f"{where}: Tables {numbers} beside the subjects of Tables {subjects}, in that order")
    assert not wrong, "table mentions that name another table's subject:\n" + "\n".join(wrong)


def test_the_subject_check_catches_a_swap():
    """The check above is live: the swap the issue found in ``zoo/variants.py`` fails it."""
    swapped = "``ibn_ratio`` (Table 4, the share of IN channels); ``ibn_cfg`` (Table 5, which stages carry IN)"
    named = [(numbers, _subject_tables(before) or _subject_tables(after))
             for numbers, before, after, _ in _clauses(swapped)]
    assert named == [([4], [5]), ([5], [4])]
