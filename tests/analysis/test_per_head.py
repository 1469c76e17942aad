"""Each head removed alone (strategy each-head), whether importance predicts that damage, and
where the pruned heads sit (issue 22, items 4 and 6), against hand computations; and the analysis
of a sweep with every new strategy, notebook executed."""

import json
import math

import nbformat
import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from headsweep import analysis
from headsweep.analysis.per_head import importance_vs_damage, layer_shares, per_head_effects
from headsweep.analysis.synthetic import make_sweep_dir, synthetic_sweep
from headsweep.trials.schema import DAMAGE_COLUMNS, PER_HEAD_COLUMNS

NEW = ("none", "top", "bottom", "random", "iterative", "layer-single-head", "each-head")


def _bh(p):
    """Benjamini-Hochberg by hand: q_(i) = min over j >= i of m p_(j) / j."""
    p = np.asarray(p, float)
    m, order = len(p), np.argsort(p)
    q = np.minimum.accumulate((m * p[order] / np.arange(1, m + 1))[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1)
    return out


@pytest.fixture(scope="module")
def heads():
    syn = synthetic_sweep(np.random.default_rng(4), models={"m": (3, 4)}, strategies=("none", "each-head"),
                          seeds=(0, 1, 2, 3, 4), single_head_arch=False, n_eval=2000)
    res, _ = analysis.clean_results(syn.results)
    return syn, res


def test_each_head_rows_are_a_condition_per_head_and_not_a_holm_family(heads):
    syn, res = heads
    each = res[res.strategy == "each-head"]
    assert len(each) == 12 * 5 and set(each["k"]) == {1} and set(each["importance_method"]) == {""}
    assert sorted(set(zip(each["layer"], each["head"]))) == [(la, h) for la in range(3) for h in range(4)]
    assert (res.loc[res.strategy != "each-head", "head"] == -1).all()
    stats = analysis.compare(res, syn.predictions.get)
    assert not stats["strategy_b"].eq("each-head").any()   # per_head.csv holds them, with BH


def test_per_head_seed_level_equals_a_hand_computation(heads):
    syn, res = heads
    ph = per_head_effects(res, syn.predictions.get)
    assert list(ph.columns) == PER_HEAD_COLUMNS and len(ph) == 12 and set(ph["level"]) == {"seeds"}
    base = res[res.strategy == "none"].set_index("seed")["accuracy"]
    ps = []
    for r in ph.itertuples(index=False):
        x = res[(res.strategy == "each-head") & (res.layer == r.layer) & (res["head"] == r.head)].set_index("seed")
        ref = st.ttest_rel(x["accuracy"], base.loc[x.index])
        assert r.difference == pytest.approx((x["accuracy"] - base.loc[x.index]).mean())
        assert r.p == pytest.approx(ref.pvalue) and r.n_seeds == 5
        ps.append(ref.pvalue)
    assert ph["q"].to_numpy() == pytest.approx(_bh(ps))
    assert (ph["significant"] == (ph["q"] < 0.05)).all()
    top = ph.sort_values("difference").iloc[0]
    assert (top["layer"], top["head"]) == (0, 0) and top["significant"]   # planted: the most important head


def test_per_head_without_corresponding_heads_tests_each_seed_over_examples():
    syn = synthetic_sweep(np.random.default_rng(5), models={"m": (2, 2)}, strategies=("none", "each-head"),
                          seeds=(0, 1), single_head_arch=False, n_eval=300,
                          model_names={"m": "preset:tiny-gpt2-random"})
    res, _ = analysis.clean_results(syn.results)
    ph = per_head_effects(res, syn.predictions.get)
    assert set(ph["level"]) == {"examples"} and len(ph) == 4 * 2 and set(ph["seed"]) == {0, 1}
    for r in ph.itertuples(index=False):
        key = lambda s, la=-1, h=-1: res[(res.strategy == s) & (res.seed == r.seed) & (res.layer == la)
                                         & (res["head"] == h)]["trial_key"].iloc[0]
        a = syn.predictions[key("none")]["correct"].to_numpy(float)
        b = syn.predictions[key("each-head", r.layer, r.head)]["correct"].to_numpy(float)
        assert r.difference == pytest.approx((b - a).mean()) and r.n_examples == 300
        assert r.p == pytest.approx(st.ttest_rel(b, a).pvalue)
    for _, g in ph.groupby("seed"):   # BH over the heads of one seed's model
        assert g["q"].to_numpy() == pytest.approx(_bh(g["p"]))


def test_importance_predicts_damage_equals_spearman_by_hand(heads):
    syn, res = heads
    dm = importance_vs_damage(res, syn.importance)
    assert list(dm.columns) == DAMAGE_COLUMNS and len(dm) == 1
    base = res[res.strategy == "none"].set_index("seed")["accuracy"]
    rhos = []
    for s in range(5):
        e = res[(res.strategy == "each-head") & (res.seed == s)].set_index(["layer", "head"])["accuracy"]
        imp = syn.importance[syn.importance.seed == s].set_index(["layer", "head"])["score"]
        rhos.append(st.spearmanr(imp.loc[e.index], base[s] - e).statistic)
    r = dm.iloc[0]
    assert r["spearman_mean"] == pytest.approx(np.mean(rhos)) and r["spearman_min"] == pytest.approx(min(rhos))
    assert r["n_seeds"] == 5 and r["n_heads"] == 12 and r["spearman_mean"] > 0   # planted: damage follows importance
    assert not math.isnan(r["spearman_of_means"])


def test_layer_shares_count_heads_removed():
    syn = synthetic_sweep(np.random.default_rng(6), models={"m": (3, 4)}, strategies=("none", "top", "bottom"),
                          seeds=(0, 1, 2), single_head_arch=False, predictions=False, k_fractions=(0.25, 0.5))
    res, _ = analysis.clean_results(syn.results)
    sh = layer_shares(res, syn.importance)
    for (strategy, k), g in res[res.strategy != "none"].groupby(["strategy", "k"]):
        counts = np.zeros(3)
        for text in g["heads_removed"]:
            for la, _ in json.loads(text):
                counts[la] += 1
        got = sh[(sh.strategy == strategy) & (sh.k == k)].sort_values("layer")["share"].to_numpy()
        assert got == pytest.approx(counts / len(g) / 4)
        assert got.sum() * 4 == pytest.approx(k)   # every removed head is in some layer


@pytest.fixture(scope="module")
def analyzed_new(tmp_path_factory):
    """Every strategy of issue 22 (iterative on the grid, keep: best rows, each-head), notebook executed."""
    path = make_sweep_dir(tmp_path_factory.mktemp("sweeps") / "new", seed=9, strategies=NEW, k_fractions=(0.25, 0.5),
                          iterative_step=0.25, models={"m": (3, 4)}, name="new")
    return path, analysis.analyze(path, execute=True, timeout=300, n_boot=200)


def test_new_outputs_are_written_shown_and_agree(analyzed_new):
    path, paths = analyzed_new
    out = path / "analysis"
    assert paths["per_head"] == out / "per_head.csv" and (out / "importance_vs_damage.csv").exists()
    figs = sorted(p.stem for p in paths["figures"].glob("*.png"))
    assert {"heads_by_layer", "per_head", "layer_single_head", "metric_vs_k"} <= set(figs)
    nb = nbformat.read(paths["notebook"], as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) == len(figs)
    html = " ".join(str(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert "prunable_k" in html and "spearman_mean" in html   # prunable.csv and importance_vs_damage.csv shown
    report = paths["report"].read_text()
    ph = pd.read_csv(paths["per_head"])
    sig = ph[ph.significant].sort_values("difference")
    assert "## Each head removed alone" in report and "**Does importance predict damage?**" in report
    assert f"L{sig.iloc[0]['layer']}H{sig.iloc[0]['head']} ({100 * sig.iloc[0]['difference']:+.1f})" in report
    assert "## Where the pruned heads sit" in report and "| m | bottom [gradient] | 6 (50%) |" in report
    assert "each-head" not in report.split("## accuracy per condition")[1].split("\n\n")[2]   # not in the table
    stats = analysis.read_table(paths["stats"])
    it = stats[(stats.family == "top_bottom_random") & stats.primary & (stats.strategy_b == "iterative")]
    assert set(it["k"]) == {6}   # K = 3 is iterative's first step: bottom-3's heads, not a comparison


def test_sanity_check_is_decided_by_the_curve_not_the_largest_k():
    """At the largest K both sit at the floor and bottom happens to be worse there; over the curve
    top hurts far more. The old check (largest K) said "inverted"; the curve-level test decides."""
    base = np.array([0.90, 0.91, 0.89, 0.90, 0.92])
    conds = {("none", 0): base, ("top", 4): base - 0.30, ("top", 8): base - 0.40, ("top", 12): base - 0.41,
             ("bottom", 4): base - 0.01, ("bottom", 8): base - 0.05, ("bottom", 12): base - 0.42}
    noise = np.random.default_rng(2).normal(0, 0.01, size=(len(conds), 5))
    rows = [{"model": "m", "strategy": s, "k": k, "k_fraction": k / 16, "seed": i, "heads_total": 16,
             "accuracy": v + (noise[j, i] if k else 0.0)}
            for j, ((s, k), vals) in enumerate(conds.items()) for i, v in enumerate(vals)]
    res, _ = analysis.clean_results(pd.DataFrame(rows))
    stats = analysis.compare(res)
    at_max = stats[(stats.family == "top_bottom_random") & stats.primary & (stats.k == 12)
                   & (stats.strategy_a == "bottom") & (stats.strategy_b == "top")].iloc[0]
    assert at_max["difference"] > 0
    sc = analysis.sanity_check(stats)
    cv = stats[(stats.family == "curve") & (stats.strategy_a == "bottom") & (stats.strategy_b == "top")].iloc[0]
    assert len(sc) == 1 and sc.iloc[0]["verdict"] == "ok"
    assert sc.iloc[0]["difference"] == cv["difference"] < 0 and sc.iloc[0]["p_adjusted"] == cv["p_adjusted"]
    text = "\n".join(analysis.build_report("t", res, stats, analysis.summarize(res)).splitlines()[:3])
    assert "Sanity check passed for m" in text and "FAILED" not in text
