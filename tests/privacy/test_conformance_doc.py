"""docs/privacy-conformance.md stays true: every PRIVACY.md row names at least one test, every
named test exists, and every named source file (and function) exists."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "privacy-conformance.md"
SOURCE = ROOT / "src" / "dupify"
# A row is a PRIVACY.md row number; "5a" marks a further row under promise 5 (e.g. fetched
# images under "images not stored"), checked the same way.
ROW = re.compile(r"^\|\s*(\d+[a-z]?)\s*\|")
SPAN = re.compile(r"`([^`]+)`")
CODE_REF = re.compile(r"^(?P<path>[\w./-]+\.py)(?:::(?P<name>[\w.]+))?$")
ROWS = range(1, 19)


@dataclass
class Row:
    number: str
    enforced_by: str
    proven_by: str
    tests: list[tuple[str, str | None]] = field(default_factory=list)


def parse_rows(text: str) -> dict[str, Row]:
    rows = {}
    for line in text.splitlines():
        match = ROW.match(line)
        if not match:
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        row = Row(match.group(1), cells[-2], cells[-1])
        current_file: str | None = None
        for span in SPAN.findall(row.proven_by):
            if span.startswith("tests/"):
                current_file, _, name = span.partition("::")
                row.tests.append((current_file, name or None))
            elif span.startswith("::") and current_file is not None:
                row.tests.append((current_file, span[2:]))
        rows[row.number] = row
    return rows


def defined_tests(path: Path) -> set[str]:
    """Test functions in a file, at module level or in classes (what pytest collects)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
    return {name for name in names if name.startswith("test")}


def defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }


def test_every_row_names_tests_that_exist() -> None:
    rows = parse_rows(DOC.read_text(encoding="utf-8"))
    promises = sorted({int(number.rstrip("abcdefghijklmnopqrstuvwxyz")) for number in rows})
    assert promises == list(ROWS), "the table must have PRIVACY.md's rows 1 to 18"
    assert all(str(number) in rows for number in ROWS), "each promise has its own row first"
    problems = []
    for row in rows.values():
        if not row.tests:
            problems.append(f"row {row.number}: names no test")
        for file, name in row.tests:
            path = ROOT / file
            if not path.is_file():
                problems.append(f"row {row.number}: {file} does not exist")
                continue
            tests = defined_tests(path)
            # A parametrised id (`test_x[sqlite]`) names the function `test_x`.
            bare = name.split("[", 1)[0] if name else None
            if bare is None and not tests:
                problems.append(f"row {row.number}: {file} holds no test")
            elif bare is not None and bare not in tests:
                problems.append(f"row {row.number}: {file}::{bare} does not exist")
    assert problems == []


def test_every_named_source_file_and_function_exists() -> None:
    rows = parse_rows(DOC.read_text(encoding="utf-8"))
    problems = []
    for row in rows.values():
        for span in SPAN.findall(row.enforced_by):
            match = CODE_REF.match(span)
            if match is None:
                continue
            candidates = [SOURCE / match["path"], ROOT / match["path"]]
            path = next((p for p in candidates if p.is_file()), None)
            if path is None:
                problems.append(f"row {row.number}: {match['path']} does not exist")
            elif match["name"] and match["name"].split(".")[-1] not in defined_names(path):
                problems.append(f"row {row.number}: {span} is not defined")
    assert problems == []


def test_the_parser_catches_missing_tests_and_rows_without_tests() -> None:
    """Control: a made-up table with a missing test, a relative reference and an empty row."""
    text = (
        "| 1 | p | `x.py` | `tests/privacy/test_conformance_doc.py::test_no_such_thing` |\n"
        "| 2 | p | `x.py` | `tests/privacy/test_retention.py::test_periods_are_configurable`, "
        "`::test_the_server_runs_the_scheduler[sqlite]` |\n"
        "| 3 | p | *open* | |\n"
    )
    rows = parse_rows(text)
    assert rows["1"].tests == [("tests/privacy/test_conformance_doc.py", "test_no_such_thing")]
    assert rows["2"].tests[1] == (
        "tests/privacy/test_retention.py",
        "test_the_server_runs_the_scheduler[sqlite]",
    )
    assert rows["3"].tests == []
    assert "test_no_such_thing" not in defined_tests(ROOT / rows["1"].tests[0][0])
    assert "test_the_server_runs_the_scheduler" in defined_tests(ROOT / rows["2"].tests[0][0])
