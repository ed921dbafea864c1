"""docs/operations.md's threat model stays true: every line names tests, and every named test
exists (a renamed or deleted test would otherwise leave a claim without its proof)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Threat model"


def named_tests(text: str) -> list[tuple[str, str]]:
    """(file, test) pairs the section names; `::name` after a file path reuses that file."""
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    pairs: list[tuple[str, str]] = []
    current: str | None = None
    for span in re.findall(r"`([^`]+)`", section):
        if span.startswith("tests/"):
            current, _, name = span.partition("::")
            pairs.append((current, name))
        elif span.startswith("::") and current is not None:
            pairs.append((current, span[2:]))
    return pairs


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def test_every_test_the_threat_model_names_exists() -> None:
    pairs = named_tests((ROOT / "docs" / "operations.md").read_text(encoding="utf-8"))
    assert len(pairs) >= 20, "the threat model names the tests that prove it"
    missing = [
        f"{file}::{name}"
        for file, name in pairs
        if not (ROOT / file).is_file() or name not in defined_tests(ROOT / file)
    ]
    assert missing == []


def test_the_reader_follows_a_file_into_its_short_names() -> None:
    text = f"{SECTION}\n- `tests/a.py::test_x`, `::test_y`\n## Next\n`tests/b.py::test_z`\n"
    assert named_tests(text) == [("tests/a.py", "test_x"), ("tests/a.py", "test_y")]
