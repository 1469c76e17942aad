"""Fixtures shared by every test package."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: every test that draws random inputs gets the same draws each run."""
    return np.random.default_rng(20190510)
