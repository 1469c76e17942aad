"""The demo in miniature, end to end under Ray: its own models, data and training recipe, fewer
seeds, K values and strategies. It checks the direction of the result the demo exists to show:
on average, removing the most important heads hurts more than removing the least important.
(CPU runs are deterministic, so this is one fixed outcome, not a flaky draw; no times asserted.)"""
import pandas as pd
import pytest
import yaml

from headsweep.orchestrator import cli
from headsweep.orchestrator.plan import demo_path

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def reduced_demo(tmp_path_factory, ray_session):
    raw = yaml.safe_load(demo_path().read_text())
    raw.update(name="demo-reduced", seeds=[0, 1], k=[0.25, 0.5], strategies=["none", "top", "bottom"])
    raw.pop("single_head_arch")
    root = tmp_path_factory.mktemp("demo")
    path = root / "demo.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["run", str(path), "--storage", str(root / "sweeps"), "--no-analysis"]) == 0
    return raw, pd.read_parquet(root / "sweeps" / "demo-reduced" / "results.parquet")


def test_every_trial_of_the_reduced_demo_has_its_row(reduced_demo):
    raw, df = reduced_demo
    # per (model, seed): the unpruned row, then top and bottom at 4 and 8 of 16 heads
    assert len(df) == len(raw["models"]) * len(raw["seeds"]) * (1 + 2 * 2)
    assert df["trial_key"].is_unique
    assert sorted(df.loc[df.strategy != "none", "k"].unique()) == [4, 8]


def test_top_hurts_more_than_bottom_on_average(reduced_demo):
    _, df = reduced_demo
    base = df[df.strategy == "none"].set_index(["model", "seed"])["accuracy"]
    assert (base > 0.8).all(), base       # the shared pretrained bases learn the task in every seed
    drop = df[df.strategy != "none"].assign(
        drop=lambda d: base.loc[list(zip(d.model, d.seed))].to_numpy() - d.accuracy)
    mean_drop = drop.groupby(["model", "strategy"])["drop"].mean().unstack("strategy")
    assert (mean_drop["top"] > mean_drop["bottom"]).all(), mean_drop
