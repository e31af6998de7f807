"""What a test's outcome was, for fixtures: pytest does not raise a test's failure into its fixtures, so a
fixture that keeps a log (the operator's) asks here in its teardown whether to print it."""

from __future__ import annotations

from typing import Final

import pytest

FAILED_PHASES: Final = pytest.StashKey[set[str]]()  # filled by `pytest_runtest_makereport` (conftest.py)


def failed_in(request: pytest.FixtureRequest) -> bool:
    """Whether the requesting test's setup or body failed."""
    return bool(request.node.stash.get(FAILED_PHASES, set()) & {"setup", "call"})
