"""Test helper: the `dupify` command run in-process on a test database."""

from __future__ import annotations

from collections.abc import Callable

from typer.testing import CliRunner

from dupify.cli.main import app
from support.settings import TEST_SECRET

Run = Callable[..., tuple[int, str]]  # run("account", "list") -> (exit code, output)


def cli_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment for a command on `database_url` with the test secret, output wide enough
    not to wrap what the tests search, plus `extra` (DUPIFY_* settings)."""
    return {
        "DUPIFY_DATABASE_URL": database_url,
        "DUPIFY_SECRET_KEY": TEST_SECRET,
        "COLUMNS": "250",
        **extra,
    }


def cli_runner(env: dict[str, str]) -> Run:
    """A function that runs `dupify <args>` with `env` and returns (exit code, output)."""
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args), env=env)
        return result.exit_code, result.output

    return invoke
