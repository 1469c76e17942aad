import copy

import pytest
import yaml

# A sweep small enough for CI: one tiny model, synthetic data, a fine-tune of a few seconds.
SMALL = {
    "name": "small",
    "models": [{"name": "preset:tiny-distilbert", "label": "tiny"}],
    "data": {"source": "synthetic", "synthetic_size": 240, "max_length": 32},
    "importance": {"examples": 48},
    "finetune": {"epochs": 1, "lr": 1.0e-3, "batch_size": 32},
    "strategies": ["none", "top", "random", "single-head"],
    "k": [0.25],
    "seeds": [0, 1],
    "single_head_arch": {"init": "pretrained"},
    "resources": {"finetune": {"cpu": 1, "gpu": 0}, "prune": {"cpu": 1, "gpu": 0}},
}
# Independently of orchestrator.grid: 2 variants x 2 seeds fine-tunes; per (multi-head model,
# seed): top@K, random@K, single-head.
SMALL_STAGE_A = 2 * 2
SMALL_STAGE_B = 2 * 3


@pytest.fixture
def small_raw():
    return copy.deepcopy(SMALL)


@pytest.fixture
def write_sweep(tmp_path):
    def write(raw, name="sweep.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw))
        return path
    return write


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the in-process sweeps of the session (the CLI reuses it)."""
    import ray
    ray.init(num_cpus=2, num_gpus=0, log_to_driver=False, logging_level="ERROR", include_dashboard=False)
    yield
    ray.shutdown()
