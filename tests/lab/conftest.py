"""Fixtures of the LAN-in-a-box tests (helpers live in tests/lab/labkit.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import labkit


@pytest.fixture(autouse=True)
def _logs_in_tmp_path(tmp_path: Path) -> Iterator[None]:
    """mcastcam process logs go to the test's ``tmp_path`` (kept by pytest for a failure)."""
    labkit.LOG_DIR[0] = tmp_path
    try:
        yield
    finally:
        labkit.LOG_DIR[0] = Path("/tmp")
