"""Importance summaries against direct pandas/scipy computations."""

import itertools

import numpy as np
import pytest
from scipy import stats as st

from headsweep import analysis
from headsweep.analysis.synthetic import synthetic_sweep


@pytest.fixture
def imp(rng):
    return synthetic_sweep(rng, predictions=False).importance


def test_mean_importance_and_matrix(imp):
    mean = analysis.mean_importance(imp)
    ref = imp.groupby(["model", "layer", "head"])["score"].mean()
    assert np.allclose(mean.set_index(["model", "layer", "head"])["mean"], ref)
    assert (mean["n_seeds"] == 5).all()
    mat = analysis.importance_matrix(mean, "gpt2")
    assert mat.shape == (4, 4)  # layers x heads of the synthetic gpt2
    assert mat.loc[2, 3] == pytest.approx(ref.loc[("gpt2", 2, 3)])


def test_rank_stability_matches_scipy(imp):
    pairs = analysis.rank_stability(imp)
    assert len(pairs) == 2 * len(list(itertools.combinations(range(5), 2)))
    sub = imp[imp.model == "distilbert"]
    x = sub[sub.seed == 1].sort_values(["layer", "head"])["score"].to_numpy()
    y = sub[sub.seed == 3].sort_values(["layer", "head"])["score"].to_numpy()
    row = pairs[(pairs.model == "distilbert") & (pairs.seed_a == 1) & (pairs.seed_b == 3)].iloc[0]
    assert row["spearman"] == pytest.approx(st.spearmanr(x, y).statistic)
    assert row["kendall"] == pytest.approx(st.kendalltau(x, y).statistic)
    summ = analysis.stability_summary(pairs)
    g = pairs[pairs.model == "distilbert"]["spearman"]
    s = summ.set_index("model").loc["distilbert"]
    assert s["spearman_mean"] == pytest.approx(g.mean()) and s["spearman_std"] == pytest.approx(g.std())
    assert s["n_pairs"] == 10 and s["spearman_min"] <= s["spearman_mean"] <= s["spearman_max"]


def test_consistent_heads_find_planted_heads(imp):
    cons = analysis.consistent_heads(imp)
    for model, (n_layers, n_heads) in {"gpt2": (4, 4), "distilbert": (3, 4)}.items():
        c = cons[cons.model == model].set_index(["layer", "head"])
        assert c.loc[(0, 0), "always_top"]  # planted: much larger than every other head
        assert c.loc[(n_layers - 1, n_heads - 1), "always_bottom"]  # planted: near zero
        # shares are fractions of seeds; the decile holds ceil(0.1 * heads) heads per seed
        cut = int(np.ceil(0.1 * n_layers * n_heads))
        assert c["top_share"].sum() == pytest.approx(cut)
        assert c["bottom_share"].sum() == pytest.approx(cut)


def test_single_seed_importance(imp):
    one = imp[imp.seed == 0]
    assert analysis.rank_stability(one).empty
    assert analysis.stability_summary(analysis.rank_stability(one)).empty
    cons = analysis.consistent_heads(one)
    assert set(cons["n_seeds"]) == {1} and cons["always_top"].any()
