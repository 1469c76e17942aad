"""Fixtures shared by every test package."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: every test that draws random inputs gets the same draws each run."""
    return np.random.default_rng(20190510)


@pytest.fixture
def shadowing_cwd(tmp_path):
    """A working directory holding a user's own ``trials/``, ``analysis/`` and ``orchestrator/``
    packages that fail on import: headsweep run from here must never import them (Ray workers
    get the driver's working directory on their path too)."""
    cwd = tmp_path / "user-project"
    for name in ("trials", "analysis", "orchestrator"):
        (cwd / name).mkdir(parents=True)
        (cwd / name / "__init__.py").write_text(f"raise ImportError('the user\'s own {name}/ was imported')\n")
    return cwd
