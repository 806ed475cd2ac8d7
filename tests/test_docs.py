"""Every shell and Python example in README.md and docs/*.md runs here, so the docs cannot rot.

A fenced ``bash``, ``console`` or ``python`` block is run, in page order, in a scratch copy of the repository's
data folders (``leaderboards/`` copied, ``transforms/``, ``datasets/``, ``tests/``, ``benchmarks/`` linked,
``../shared`` beside it). A shell block of plain ``ibnbench`` lines (``$VAR`` and glob expansion, ``NAME=value``
lines, ``#`` comments) runs them through ``ibnbench.cli.main`` in this process, which saves a torch import per
command; any other shell block runs in bash, with ``ibnbench`` on the PATH running this checkout as the installed
script would. A ``console`` block's ``$``
commands run and every output line it shows must appear in what they print. A block that cannot run here says
why in an HTML comment just above it: ``<!-- not run: REASON -->``, or ``<!-- run by tests/test_X.py -->`` when
another test runs it (that file must name the page). Other fences (``toml``, ``text``) are not examples.
"""
from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.shared import SHARED, need, need_extra

from ibnbench.cli import main as ibnbench_main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE_LANGUAGES = {"bash", "console", "python"}
OTHER_LANGUAGES = {"toml", "text"}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.M | re.S)
MARK = re.compile(r"<!--\s*(not run:|run by)\s*([^<>]*?)\s*-->\s*\Z")
LINKED = ("transforms", "datasets", "tests", "benchmarks")
SLOW_PAGES = {"README.md": "the quick start evaluates all 100 shared images"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    code: str
    not_run: str | None  # the reason given, or None
    run_by: str | None  # the test file that runs it, or None

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of one page with the marker comment just above each, if any."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        mark = MARK.search(text[:match.start()].rstrip() + "\n")
        kind, reason = mark.groups() if mark else (None, None)
        found.append(Block(page, text.count("\n", 0, match.start()) + 1, match.group(1), match.group(2),
                           reason if kind == "not run:" else None, reason if kind == "run by" else None))
    return found


def console_parts(code: str) -> tuple[str, list[str]]:
    """A console block's commands (``$`` lines and their ``\\`` continuations) and the output lines it shows."""
    commands, shown, continued = [], [], False
    for line in code.splitlines():
        if line.startswith("$ ") or continued:
            commands.append(line.removeprefix("$ "))
            continued = line.endswith("\\")
        elif line.strip():
            shown.append(line.rstrip())
    return "\n".join(commands), shown


@pytest.fixture
def playground(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A working folder that looks like the repository root (with ``../shared`` beside it) and the
    environment that puts this checkout's ``ibnbench`` and ``python`` first on the PATH."""
    work = tmp_path / "repo"
    work.mkdir()
    for name in LINKED:
        (work / name).symlink_to(ROOT / name)
    shutil.copytree(ROOT / "leaderboards", work / "leaderboards")
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "ibnbench"
    launcher.write_text(f"#!{sys.executable}\nimport sys\n\nfrom ibnbench.cli import main\n\nsys.exit(main())\n")
    launcher.chmod(launcher.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]),
           "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return work, env


def plain_commands(code: str, work: Path) -> list[list[str]] | None:
    """The argument lists of a block made only of ``ibnbench`` lines and ``NAME=value`` lines (expanded as bash
    would), or None when the block needs bash (pipes, redirections, heredocs, loops, command substitution)."""
    variables, commands = {}, []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if re.search(r"[|<>;&`]|\$\(", line.split(" #")[0]):
            return None
        if len(words) == 1 and re.fullmatch(r"[A-Za-z_]\w*=[^$]*", words[0]):
            name, value = words[0].split("=", 1)
            variables[name] = value
            continue
        if words[0] != "ibnbench" or any(re.search(r"\$\{?(\w+)", w) and not _known(w, variables) for w in words):
            return None
        commands.append([arg for word in words[1:] for arg in _expand(word, variables, work)])
    return commands


def _known(word: str, variables: dict[str, str]) -> bool:
    return all(name in variables for name in re.findall(r"\$\{?(\w+)\}?", word))


def _expand(word: str, variables: dict[str, str], work: Path) -> list[str]:
    word = re.sub(r"\$\{?(\w+)\}?", lambda m: variables[m.group(1)], word)
    matches = sorted(glob.glob(word, root_dir=work)) if re.search(r"[*?[]", word) else []
    return matches or [word]


def run_in_process(commands: list[list[str]], block: Block, work: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(work)
    printed = io.StringIO()
    for argv in commands:
        errors = io.StringIO()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
            code = ibnbench_main(argv)
        assert code == 0, f"{block.where()}: ibnbench {shlex.join(argv)} exited {code}:\n{errors.getvalue()}"
    return printed.getvalue()


def run_in_bash(code: str, block: Block, work: Path, env: dict[str, str]) -> str:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{block.where()} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def run_shell(block: Block, work: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, shown = console_parts(block.code) if block.language == "console" else (block.code, [])
    commands = plain_commands(code, work)
    printed = run_in_bash(code, block, work, env) if commands is None else run_in_process(commands, block, work,
                                                                                           monkeypatch)
    for line in shown:
        assert line in printed, f"{block.where()}: shown output line not printed: {line!r}\n{printed}"


def run_python(block: Block, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    exec(compile(block.code, block.where(), "exec"), {"__name__": "__docs__"})


def _page_param(page: Path):
    slow = SLOW_PAGES.get(page.name)
    return pytest.param(page, id=page.name, marks=[pytest.mark.slow] if slow else [])


def test_plain_commands_expand_as_bash_would(tmp_path):
    (tmp_path / "a1.json").touch()
    (tmp_path / "a2.json").touch()
    code = "A=a1.json  # a record\nibnbench report $A a*.json --conditions origin,std*1.5 \\\n    --ci\n"
    assert plain_commands(code, tmp_path) == [["report", "a1.json", "a1.json", "a2.json",
                                               "--conditions", "origin,std*1.5", "--ci"]]
    for needs_bash in ("ibnbench report $(ls) x", "ibnbench models | head", "cat > x <<'EOF'", "ibnbench report $B"):
        assert plain_commands(needs_bash, tmp_path) is None, needs_bash


def test_console_blocks_split_into_commands_and_shown_output():
    code = "$ ibnbench run --model m \\\n      --output r.json\n| origin | 28.00 |\n\n$ ibnbench check r.json\n"
    assert console_parts(code) == ("ibnbench run --model m \\\n      --output r.json\nibnbench check r.json",
                                   ["| origin | 28.00 |"])


def _anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_resolve(page):
    """Every link to a file of the repository (and its heading anchor, if any) exists."""
    for target, anchor in re.findall(r"\]\((?!https?:)([^)#\s]+)(?:#([^)\s]+))?\)", page.read_text()):
        linked = (page.parent / target).resolve()
        assert linked.exists(), f"{page.name}: {target}"
        if anchor:
            headings = re.findall(r"^#+ (.*)$", linked.read_text(), re.M)
            assert anchor in {_anchor(h) for h in headings}, f"{page.name}: {target}#{anchor}"


def test_readme_is_short_and_gives_the_ci_test_command():
    """At most 150 lines (the rest lives in docs/), and the test command .ci/run runs is the README's, verbatim."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    ci_command = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "-m pytest" in line]
    assert len(ci_command) == 1 and f"```bash\n{ci_command[0]}\n```" in readme


def test_there_are_docs_pages():
    assert len(PAGES) > 5 and all(page.read_text().strip() for page in PAGES)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_example_runs_or_says_why_not(page):
    """Nothing is skipped silently: each example block is run, or carries its reason, and the fences are known."""
    for block in blocks(page):
        assert block.language in EXAMPLE_LANGUAGES | OTHER_LANGUAGES, f"{block.where()}: fence '{block.language}'"
        if block.not_run is not None:
            assert len(block.not_run.split()) >= 2, f"{block.where()}: say why it is not run"
        if block.run_by is not None:
            runner = ROOT / block.run_by
            assert runner.is_file(), f"{block.where()}: {block.run_by} does not exist"
            assert str(page.relative_to(ROOT)) in runner.read_text(), f"{block.run_by} does not read {page.name}"


def runnable(page: Path) -> list[Block]:
    return [block for block in blocks(page) if block.language in EXAMPLE_LANGUAGES
            and block.not_run is None and block.run_by is None]


@pytest.mark.parametrize("page", [_page_param(page) for page in PAGES if runnable(page)])
def test_page_examples_run(page, playground, monkeypatch):
    """The page's runnable blocks, in order, in one scratch repository (a block may use what an earlier one made)."""
    need_extra("efficientnet_lite_pytorch")
    work, env = playground
    if any("../shared" in block.code for block in runnable(page)):
        need(SHARED / "data" / "imagenet-val-100" / "val")
    for block in runnable(page):
        if block.language == "python":
            run_python(block, work, monkeypatch)
        else:
            run_shell(block, work, env, monkeypatch)
