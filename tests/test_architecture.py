"""Architecture rules for src/dupify, read from its source: no import cycles between modules or
between packages, a small top level, short files, FastAPI/Starlette and `request.state` kept in
the HTTP layer, a docstring on every module. Each rule is also tried on a made-up package, so a
checker that stopped finding anything would fail here too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from support.architecture import (
    Module,
    crowded_top_level,
    cycles,
    import_graph,
    imports_outside,
    long_files,
    missing_docstrings,
    package_graph,
    read_package,
    request_state_outside,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "dupify"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
HTTP_LAYER = ("dupify.api", "dupify.portal", "dupify.server", "dupify.app")
WEB_FRAMEWORKS = {"fastapi", "starlette"}
TOP_LEVEL_MODULES = 6  # .py files directly in src/dupify besides __init__.py
MAX_LINES = 400
SOURCE_SUFFIXES = (".py", ".html", ".js", ".css")


@pytest.fixture(scope="module")
def dupify() -> dict[str, Module]:
    return read_package(SRC)


def _listed(problems: list[str]) -> str:
    return "\n".join(problems)


def test_no_import_cycle_between_modules(dupify: dict[str, Module]) -> None:
    found = cycles(import_graph(dupify))
    assert not found, "modules that import each other:\n" + _listed(found)


def test_no_import_cycle_between_packages(dupify: dict[str, Module]) -> None:
    found = cycles(package_graph(import_graph(dupify)))
    assert not found, "packages that import each other:\n" + _listed(found)


def test_the_top_level_stays_small() -> None:
    found = crowded_top_level(SRC, TOP_LEVEL_MODULES)
    assert not found, f"more than {TOP_LEVEL_MODULES} modules in src/dupify: {found}"


def test_no_file_is_longer_than_400_lines() -> None:
    found = long_files(SRC, SOURCE_SUFFIXES, MAX_LINES)
    assert not found, "files to split:\n" + _listed(found)


def test_only_the_http_layer_imports_the_web_framework(dupify: dict[str, Module]) -> None:
    found = imports_outside(dupify, WEB_FRAMEWORKS, HTTP_LAYER)
    assert not found, "FastAPI/Starlette below the HTTP layer:\n" + _listed(found)


def test_only_the_http_layer_reads_request_state(dupify: dict[str, Module]) -> None:
    found = request_state_outside(dupify, HTTP_LAYER)
    assert not found, "request.state below the HTTP layer (pass a RequestContext):\n" + _listed(
        found
    )


def test_every_module_has_a_docstring(dupify: dict[str, Module]) -> None:
    found = missing_docstrings(dupify)
    assert not found, "modules without a docstring:\n" + _listed(found)


def documented_modules(text: str) -> set[str]:
    """The module paths named in the first column of docs/architecture.md's module table."""
    section = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([\w/]+\.py)` \|", section, flags=re.MULTILINE))


def source_modules(root: Path) -> set[str]:
    return {
        path.relative_to(root).as_posix()
        for path in root.rglob("*.py")
        if path.name != "__init__.py" and path.relative_to(root).parts[0] != "migrations"
    }


def test_the_module_table_in_the_docs_matches_the_tree() -> None:
    documented = documented_modules(DOCS.read_text(encoding="utf-8"))
    actual = source_modules(SRC)
    assert sorted(actual - documented) == [], "modules missing from docs/architecture.md"
    assert sorted(documented - actual) == [], "docs/architecture.md names modules that are gone"


def test_the_docs_table_reader_sees_rows_and_only_rows() -> None:
    text = (
        "# A\n## Modules\n| module | job |\n|---|---|\n| `a/b.py` | x |\n## Data\n| `c.py` | y |\n"
    )
    assert documented_modules(text) == {"a/b.py"}


def test_the_checks_read_the_real_package(dupify: dict[str, Module]) -> None:
    """A wrong path would make every rule pass on nothing."""
    assert {"dupify", "dupify.app", "dupify.api.deps", "dupify.limits.cache"} <= set(dupify)
    assert import_graph(dupify)["dupify.app"]


# The checkers on a made-up package ---------------------------------------------------------


def make_package(root: Path, files: dict[str, str]) -> Path:
    """Write `files` (paths relative to the package `pkg`) below `root`; each opens with a
    docstring unless its text starts with `!`. Returns the package directory."""
    package = root / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        body = text[1:] if text.startswith("!") else f'"""{name}."""\n{text}'
        path.write_text(body)
    return package


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    package = make_package(
        tmp_path,
        {
            "a.py": "from pkg.b import thing\n",
            "b.py": "def thing():\n    from pkg import c\n",
            "c.py": "import pkg.a\n",
            "d.py": "from . import a\n",
        },
    )
    assert cycles(import_graph(read_package(package))) == ["pkg.a -> pkg.b -> pkg.c -> pkg.a"]


def test_imports_for_type_checking_only_make_no_cycle(tmp_path: Path) -> None:
    package = make_package(
        tmp_path,
        {
            "a.py": "from pkg.b import B\n",
            "b.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\n"
                "else:\n    import json\nclass B: ...\n"
            ),
        },
    )
    graph = import_graph(read_package(package))
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == set()
    assert cycles(graph) == []


def test_a_cycle_between_packages_is_found_though_the_modules_have_none(tmp_path: Path) -> None:
    package = make_package(
        tmp_path,
        {
            "web/__init__.py": "",
            "web/routes.py": "from pkg.core.logic import run\n",
            "core/__init__.py": "",
            "core/logic.py": "def run(): ...\n",
            "core/hooks.py": "from ..web.routes import *\n",
        },
    )
    graph = import_graph(read_package(package))
    assert cycles(graph) == []
    assert cycles(package_graph(graph)) == ["pkg.core -> pkg.web -> pkg.core"]


def test_a_crowded_top_level_is_found(tmp_path: Path) -> None:
    package = make_package(tmp_path, {f"m{n}.py": "" for n in range(3)})
    assert crowded_top_level(package, 3) == []
    (package / "m3.py").write_text('"""m3."""\n')
    assert crowded_top_level(package, 3) == ["m0.py", "m1.py", "m2.py", "m3.py"]


def test_a_long_file_is_found(tmp_path: Path) -> None:
    package = make_package(
        tmp_path, {"short.py": "x = 1\n" * 9, "long.py": "x = 1\n" * 10, "page.html": "!<p>\n" * 11}
    )
    found = long_files(package, SOURCE_SUFFIXES, 10)
    assert found == ["pkg/long.py: 11 lines", "pkg/page.html: 11 lines"]


def test_the_web_framework_below_the_http_layer_is_found(tmp_path: Path) -> None:
    package = make_package(
        tmp_path,
        {
            "web.py": "from fastapi import FastAPI\n",
            "core.py": "import json\nimport starlette.requests\n",
            "typed.py": "import typing\nif typing.TYPE_CHECKING:\n    import fastapi\n",
        },
    )
    found = imports_outside(read_package(package), WEB_FRAMEWORKS, ["pkg.web"])
    assert found == ["pkg.core:3 imports starlette", "pkg.typed:4 imports fastapi"]


def test_request_state_below_the_http_layer_is_found(tmp_path: Path) -> None:
    package = make_package(
        tmp_path,
        {
            "web/__init__.py": "",
            "web/routes.py": "def f(request):\n    return request.state.x\n",
            "core.py": "def f(ctx, http_request):\n    ctx.state\n    return http_request.state\n",
            "more.py": "def f(self):\n    return self.request.state\n",
        },
    )
    found = request_state_outside(read_package(package), ["pkg.web"])
    assert found == ["pkg.core:4", "pkg.more:3"]


def test_a_module_without_a_docstring_is_found(tmp_path: Path) -> None:
    package = make_package(
        tmp_path, {"good.py": "", "bare.py": "!import os\n", "sub/__init__.py": "!\n"}
    )
    assert missing_docstrings(read_package(package)) == ["pkg.bare", "pkg.sub"]
