"""Fixtures for the report tests (builders live in report_helpers.py, importable from the tests)."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))  # --import-mode=importlib adds no test dirs

from report_helpers import make_frames  # noqa: E402


@pytest.fixture(scope="session")
def frames():
    return make_frames()
