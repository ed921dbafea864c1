"""The `dupify` command: accounts and keys from a shell, on both databases."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from dupify.cli.main import app
from dupify.keys.format import is_well_formed
from support.cli import Run


def test_account_and_key_lifecycle(run: Run) -> None:
    code, output = run("account", "create", "--email", "Ada@Example.com", "--name", "Ada")
    assert code == 0, output
    code, output = run("account", "create", "--email", "ada@example.com", "--name", "Again")
    assert code == 1 and "already exists" in output
    code, output = run("account", "create", "--email", "not-an-email", "--name", "X")
    assert code == 1 and "invalid email" in output

    code, output = run(
        "key", "create", "--account", "ada@example.com", "--name", "ci",
        "--scopes", "embeddings,usage:read", "--expires-days", "30",
    )  # fmt: skip
    assert code == 0, output
    key = output.strip().splitlines()[-1]
    assert is_well_formed(key)

    code, output = run("key", "list", "--account", "ada@example.com", "--json")
    assert code == 0
    assert key not in output
    assert f"dpy_{key[4:12]}" in output
    assert '"scopes": "embeddings usage:read"' in output
    key_id = re.search(r'"id": "(key_[0-9a-f]+)"', output)
    assert key_id is not None

    code, output = run("key", "revoke", key_id.group(1))
    assert code == 0 and "revoked" in output
    code, output = run("key", "list", "--account", "ada@example.com", "--json")
    assert '"revoked": true' in output

    code, output = run("key", "create", "--account", "nobody@example.com")
    assert code == 1 and "no account" in output
    code, output = run("key", "create", "--account", "ada@example.com", "--scopes", "root")
    assert code == 1 and "scopes" in output

    code, output = run("account", "list", "--json")
    assert code == 0 and "ada@example.com" in output


def test_models_list() -> None:
    result = CliRunner().invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert '"id": "dupify-visual-1"' in result.output
