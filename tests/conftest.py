"""The suite's root: shared helpers live in tests/support (tests/ is on sys.path), and every
shared fixture is defined once, in support/fixtures.py, registered here."""

import pytest

# Plain asserts in the helpers then report their values, as the tests' own asserts do.
pytest.register_assert_rewrite("support")

pytest_plugins = ["support.fixtures"]
