"""Shared fixtures: where the real Asterisk 22 recordings live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def captures_path() -> Path:
    """The recordings folder: $GUICHET_CAPTURES, else ../shared/asterisk-captures beside the repo."""
    env = os.environ.get("GUICHET_CAPTURES")
    path = Path(env) if env else REPO.parent / "shared" / "asterisk-captures"
    if not (path / "README.md").is_file():
        raise RuntimeError(
            f"Asterisk recordings not found at {path}; set GUICHET_CAPTURES to the asterisk-captures folder"
        )
    return path


@pytest.fixture(scope="session")
def captures_dir() -> Path:
    return captures_path()
