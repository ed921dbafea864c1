"""The `dupify` command line: `app` is the entry point (pyproject's `dupify = dupify.cli:app`)."""

from dupify.cli.main import app

__all__ = ["app"]
