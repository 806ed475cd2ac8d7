"""The three files gpu_check.sh leaves in ``$OUT`` (the device tool brings back at most eight): ``summary.json``,
``summary.md`` and ``logs.tar.gz`` (every step's log and result file), rebuilt after every step."""
from __future__ import annotations

import json
import os
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

OUT_FILES = ("summary.json", "summary.md", "logs.tar.gz")
STATES = {"0": "ok", "124": "timed out", "137": "timed out"}


def pytest_counts(xml: Path) -> dict | None:
    """Tests, failures, errors, skipped and the failing test ids from pytest's junit XML, or None."""
    try:
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError):
        return None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts: dict = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    counts["failed"] = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
                        if case.find("failure") is not None or case.find("error") is not None]
    return counts


def collect(work: Path) -> dict:
    """Each step's state (the shell's exit status, wall and limit) and result, in the order they ran."""
    steps: dict[str, dict] = {}
    statuses = sorted((work / "steps").glob("*.status"), key=lambda p: p.stat().st_mtime)
    for status in statuses:
        rc, wall, limit = (status.read_text().split() + ["", "", ""])[:3]
        steps[status.stem] = {"status": STATES.get(rc, f"failed (exit {rc})"), "wall_s": float(wall or 0),
                              "limit_s": float(limit or 0)}
    for saved in (json.loads(p.read_text()) for p in sorted((work / "steps").glob("*.json"))):
        entry = steps.setdefault(saved["step"], {"status": "running"})
        entry.update(complete=saved["complete"], dry_run=saved["dry_run"], result=saved["result"])
    return steps


def line(name: str, entry: dict) -> str:
    """The step's one line: its state, wall time and its result's ``line`` (or the start of its result)."""
    result = entry.get("result") or {}
    text = result.get("line") or (json.dumps(result)[:300] if result else "no result")
    partial = " (partial)" if entry.get("complete") is False else ""
    return f"{name}: {entry['status']}{partial}, {entry.get('wall_s', '-')} s of {entry.get('limit_s', '-')}: {text}"


def markdown(steps: dict, dry_run: bool) -> str:
    title = "GPU check" + (" -- DRY RUN on the CPU: toy sizes, not measurements" if dry_run else "")
    lines = [f"# {title}", "", "| step | status | wall s | limit s | result |", "|---|---|---|---|---|"]
    for name, entry in steps.items():
        result = entry.get("result") or {}
        text = (result.get("line") or json.dumps(result)[:300]).replace("|", "/")
        partial = " (partial)" if entry.get("complete") is False else ""
        lines.append(f"| {name} | {entry['status']}{partial} | {entry.get('wall_s', '-')} | "
                     f"{entry.get('limit_s', '-')} | {text} |")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def summarize(work: Path, out: Path) -> dict:
    """Rebuild ``out``'s three files from ``work/steps`` and ``work/logs``."""
    steps = collect(work)
    dry_run = any(entry.get("dry_run") for entry in steps.values())
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "summary.json", json.dumps({"dry_run": dry_run, "steps": steps}, indent=1, default=str))
    _write(out / "summary.md", markdown(steps, dry_run))
    tmp = out / "logs.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for folder in ("logs", "steps"):
            if (work / folder).is_dir():
                tar.add(work / folder, arcname=folder)
    os.replace(tmp, out / "logs.tar.gz")
    return steps
