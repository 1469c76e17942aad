"""Shared fixtures for the analysis tests: a seeded rng and synthetic sweep directories.

The generator itself lives in analysis/synthetic.py so the orchestrator's tests
and demo notebooks can reuse it.
"""


import numpy as np
import pytest

from headsweep.analysis.synthetic import make_sweep_dir


@pytest.fixture
def rng():
    return np.random.default_rng(20240601)


@pytest.fixture(scope="session")
def full_sweep(tmp_path_factory):
    """Two models, 5 seeds, every strategy, one-head arch, predictions, importance."""
    return make_sweep_dir(tmp_path_factory.mktemp("sweeps") / "full", seed=7, name="full-synthetic")


@pytest.fixture(scope="session")
def analyzed(full_sweep):
    """analyze() with the notebook executed, once for the whole session (the slow part)."""
    from headsweep import analysis

    return analysis.analyze(full_sweep, execute=True, timeout=300, n_boot=500)
