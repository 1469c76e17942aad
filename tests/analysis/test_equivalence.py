"""How many heads can go (issue 22, item 3): the non-inferiority family, the prunable fraction and
its seed bootstrap, checked against hand computations and calibrated by seeded simulation."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from headsweep import analysis
from headsweep.analysis import equivalence as eq
from headsweep.analysis.__main__ import main
from headsweep.analysis.stats import holm
from headsweep.analysis.synthetic import make_sweep_dir, synthetic_sweep
from headsweep.trials.errors import UserError
from headsweep.trials.schema import PRUNABLE_COLUMNS

MARGIN = 0.01


def _table(conds: dict, model="m", heads_total=8) -> pd.DataFrame:
    """{(strategy, k): [accuracy per seed]} -> a cleaned results table."""
    rows = [{"model": model, "strategy": s, "k": k, "k_fraction": k / heads_total, "seed": i, "accuracy": v,
             "heads_total": heads_total, "trial_key": f"{model}-{s}-{k}-{i}"}
            for (s, k), vals in conds.items() for i, v in enumerate(vals)]
    res, _ = analysis.clean_results(pd.DataFrame(rows))
    return res


BASE = np.array([0.900, 0.910, 0.890, 0.905])
SMALL = {("none", 0): BASE,
         ("bottom", 2): BASE + [0.001, -0.002, 0.000, 0.002],      # well inside the margin
         ("bottom", 4): BASE + [-0.004, -0.001, -0.003, -0.002],   # inside, less sure
         ("bottom", 6): BASE + [-0.030, -0.020, -0.040, -0.025],   # far outside
         ("top", 2): BASE + [-0.050, -0.060, -0.040, -0.055],
         ("top", 4): BASE + [-0.150, -0.160, -0.140, -0.150],
         ("top", 6): BASE + [-0.300, -0.310, -0.290, -0.300]}


def test_noninferiority_p_and_prunable_fraction_equal_a_hand_computation():
    res = _table(SMALL)
    stats = analysis.compare(res, margin=MARGIN)
    nf = stats[(stats.family == "noninferiority") & stats.primary].set_index("comparison_id")
    assert len(nf) == 6 and set(nf["test"]) == {"noninferiority_t"}
    # by hand: t = (mean(d) + margin) / (sd / sqrt(n)), p = P(T_{n-1} >= t)
    p, lb = {}, {}
    for (s, k), v in SMALL.items():
        if s == "none":
            continue
        d = v - BASE
        se = d.std(ddof=1) / 2
        p[(s, k)] = st.t.sf((d.mean() + MARGIN) / se, 3)
        lb[(s, k)] = (d.mean() - st.t.ppf(0.95, 3) * se, d.mean() - st.t.ppf(1 - 0.05 / 6, 3) * se)
        r = nf.loc[f"noninferiority|m|{s} k={k}|vs|none"]
        assert r["p"] == pytest.approx(p[(s, k)], rel=1e-9)
        assert r["difference"] == pytest.approx(d.mean())
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((lb[(s, k)][0], 1.0))      # one-sided, [lb, top of range]
        assert (r["sim_ci_low"], r["sim_ci_high"]) == pytest.approx((lb[(s, k)][1], 1.0))
        assert "one-sided" in r["ci_kind"] and "Bonferroni" in r["sim_ci_kind"]
    # Holm by hand over the 6: sorted p, (m - i) p, running max
    keys = sorted(p, key=p.get)
    adj, run = {}, 0.0
    for i, key in enumerate(keys):
        run = max(run, min(1.0, (6 - i) * p[key]))
        adj[key] = run
    for key, a in adj.items():
        assert nf.loc[f"noninferiority|m|{key[0]} k={key[1]}|vs|none", "p_adjusted"] == pytest.approx(a)
    assert adj[("bottom", 2)] < 0.05 and adj[("bottom", 4)] < 0.05 and adj[("bottom", 6)] > 0.05
    # the simultaneous bound lies above -margin exactly where p < alpha / m (so Holm-significant)
    for key in p:
        assert (lb[key][1] > -MARGIN) == (p[key] < 0.05 / 6)
    pr = eq.prunable(res, stats, MARGIN, n_boot=300, seed=3).set_index("strategy")
    assert list(pr.columns[:8]) == ["model", "margin", "prunable_k", "prunable_k_fraction", "ci_low", "ci_high",
                                    "n_seeds", "task"]
    assert set(PRUNABLE_COLUMNS) == set(pr.reset_index().columns)
    assert pr.loc["bottom", "prunable_k"] == 4 and pr.loc["bottom", "prunable_k_fraction"] == 0.5
    assert pr.loc["top", "prunable_k"] == 0 and pr.loc["top", "prunable_k_fraction"] == 0
    assert pr.loc["bottom", "n_seeds"] == 4 and json.loads(pr.loc["bottom", "grid_k"]) == [2, 4, 6]
    assert pr.loc["bottom", "ci_low"] <= 0.5 <= pr.loc["bottom", "ci_high"]
    assert {pr.loc["bottom", "ci_low_k"], pr.loc["bottom", "ci_high_k"]} <= {0, 2, 4, 6}   # grid values
    assert "not shown non-inferior" in pr.loc["bottom", "note"] and "recomputes" in pr.loc["bottom", "interval"]


def test_identical_differences_stay_in_the_family_with_p_one():
    conds = dict(SMALL)
    conds[("random", 2)] = BASE - 0.002          # the same difference in every seed
    res = _table(conds)
    stats = analysis.compare(res, margin=MARGIN)
    prim = analysis.primary(stats).set_index("comparison_id")
    for fam in ("vs_baseline", "noninferiority"):
        r = prim.loc[f"{fam}|m|random k=2|vs|none"]
        assert r["p"] == 1.0 and math.isnan(r["ci_low"]) and r["sd"] == 0
        assert "zero variance" in r["note"]
        assert r["family_size"] == (prim["family"] == fam).sum()   # counted in m


def test_holm_reject_equals_statsmodels(rng):
    p = rng.uniform(0, 0.08, size=(9, 150)) ** rng.uniform(0.5, 2, size=(9, 150))
    p[rng.random(p.shape) < 0.1] = np.nan
    got = eq.holm_reject(p, 0.05)
    for b in range(p.shape[1]):
        ok = ~np.isnan(p[:, b])
        want = np.zeros(9, bool)
        if ok.any():
            want[ok] = holm(p[ok, b]) < 0.05   # statsmodels' multipletests(method="holm")
        assert (got[:, b] == want).all(), b


def test_bootstrap_resample_recomputes_the_same_test():
    """One resample that draws every seed once is the data itself: its p equal the tests'."""
    d = np.array([[0.001, -0.002, 0.0, 0.002], [-0.03, -0.02, -0.04, -0.025], [0.003, 0.003, 0.003, 0.003]])
    p = eq._p_matrix(d[:, np.arange(4)[None, :]], MARGIN)[:, 0]
    want = [eq.noninferiority_p(x, MARGIN)[1] for x in d]
    assert p == pytest.approx(want) and p[2] == 1.0
    assert want[0] == pytest.approx(st.ttest_1samp(d[0], -MARGIN, alternative="greater").pvalue)


def test_bootstrap_is_seeded_and_varies_with_the_data():
    res = _table(SMALL)
    stats = analysis.compare(res, margin=MARGIN)
    a = eq.prunable(res, stats, MARGIN, n_boot=200, seed=5)
    b = eq.prunable(res, stats, MARGIN, n_boot=200, seed=5)
    pd.testing.assert_frame_equal(a, b)
    none = eq.prunable(res, stats, MARGIN, n_boot=0)
    assert (none["n_boot"] == 0).all() and none["ci_low"].isna().all() and (none["interval"] == "none").all()


# ---------------------------------------------------------------- calibration (seeded simulation)
GRID = (0.25, 0.5, 0.75)


def _simulate(rng, n_sweeps, *, damage_from, trial_sd, seeds):
    """n_sweeps generated sweeps as n_sweeps models of one table (each its own Holm family: compare
    and prunable group by model). Bottom-K's true difference to the unpruned model is 0 below K
    fraction ``damage_from`` and exactly -margin from it on (the boundary of H0, the hardest case)."""
    def effect(model, strategy, kf, rec, arch):
        return -MARGIN if strategy == "bottom" and kf >= damage_from - 1e-9 else 0.0

    syn = synthetic_sweep(rng, models={f"s{i:03d}": (2, 4) for i in range(n_sweeps)}, strategies=("none", "bottom"),
                          k_fractions=GRID, seeds=tuple(range(seeds)), single_head_arch=False, predictions=False,
                          effect=effect, trial_sd=trial_sd, seed_sd=0.02, base_accuracy=0.85)
    res, _ = analysis.clean_results(syn.results)
    by = ("family", "test", "model")
    stats = analysis.compare(res, margin=MARGIN, by=by)
    pr = eq.prunable(res, stats, MARGIN, n_boot=0, by=by)
    return res, stats, pr[pr.strategy == "bottom"].set_index("model")


def test_calibration_every_k_equivalent_gives_the_full_grid(rng):
    """Every K truly equal to the unpruned model (well inside the margin): the prunable fraction is
    the whole grid in at least 90% of 200 sweeps (6 seeds, seed SD of the differences 0.5 points,
    three grid K in one Holm family; about 96-98% in runs with other seeds)."""
    _, _, pr = _simulate(rng, 200, damage_from=2.0, trial_sd=0.0035, seeds=6)
    full = (pr["prunable_k"] == 6).mean()
    assert full >= 0.90, full


def test_calibration_damage_beyond_the_margin_is_rarely_claimed(rng):
    """From K = 50% on the loss is the margin itself (H0 holds): the reported prunable K reaches
    that K in at most 5% of 300 sweeps. Reading non-significance as "no loss" (the largest K before
    the first Holm-significant drop against the baseline) would claim it in most of them: the
    design has little power (5 seeds, seed SD of the differences 1.4 points). Last run: 1.3% claimed
    by the non-inferiority test, 88% by the non-significance reading."""
    res, stats, pr = _simulate(rng, 300, damage_from=0.5, trial_sd=0.01, seeds=5)
    claimed = (pr["prunable_k"] >= 4).mean()
    assert claimed <= 0.05, claimed
    vs = stats[(stats.family == "vs_baseline") & stats.primary & (stats.strategy_b == "bottom")]
    naive = vs.groupby("model").apply(lambda g: (g.sort_values("k")["p_adjusted"] >= 0.05).cumprod()
                                      .mul(g.sort_values("k")["k"]).max(), include_groups=False)
    assert (naive >= 4).mean() > 0.5


# ---------------------------------------------------------------- the margin: declared, recorded, agreed
def test_margin_is_read_from_spec_yaml_and_must_agree(tmp_path, capsys):
    from headsweep.orchestrator.sweep import AnalysisSpec

    assert AnalysisSpec().margin == eq.DEFAULT_MARGIN
    assert eq.margin_of([{"name": "a", "analysis": {"margin": 0.02}}]) == (0.02, [])
    m, notes = eq.margin_of([{"name": "old"}])
    assert m == eq.DEFAULT_MARGIN and "declares no analysis.margin" in notes[0]
    with pytest.raises(UserError, match="analysis.margin"):
        eq.margin_of([{"name": "a", "analysis": {"margin": 0.02}}, {"name": "b", "analysis": {"margin": 0.01}}])
    with pytest.raises(UserError, match=r"must be a number in \(0, 1\)"):
        eq.margin_of([{"name": "a", "analysis": {"margin": 5}}])
    a = make_sweep_dir(tmp_path / "a", models={"m": (2, 2)}, seeds=(0, 1, 2), predictions=False, name="a",
                       margin=0.02)
    b = make_sweep_dir(tmp_path / "b", models={"m": (2, 2)}, seeds=(3, 4, 5), predictions=False, name="b",
                       margin=0.01)
    assert main([str(a), str(b), "--no-execute", "--out", str(tmp_path / "both")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: analysis.margin:") and "a: 0.02, b: 0.01" in err
    assert not (tmp_path / "both").exists()
    paths = analysis.analyze(a, execute=False, n_boot=50)
    pr = pd.read_csv(paths["prunable"])
    assert (pr["margin"] == 0.02).all()
    assert "at a 2-point margin" in paths["report"].read_text()


def test_report_and_headline_say_what_prunable_csv_says(tmp_path):
    from headsweep.orchestrator.headline import prunable_lines

    path = make_sweep_dir(tmp_path / "s", models={"m": (2, 4)}, seeds=tuple(range(6)), predictions=False,
                          strategies=("none", "top", "bottom", "random"), k_fractions=GRID, trial_sd=0.0015,
                          single_head_arch=False)
    paths = analysis.analyze(path, execute=False, n_boot=200)
    pr = pd.read_csv(paths["prunable"])
    report = paths["report"].read_text()
    bottom = pr[pr.strategy == "bottom"].iloc[0]
    assert bottom["prunable_k"] > 0   # planted: bottom-K loses 0.02 x K fraction, inside the margin at 25%
    frac = f"{100 * bottom['prunable_k_fraction']:.1f}".rstrip("0").rstrip(".")
    lo, hi = (f"{100 * bottom[c]:.1f}".rstrip("0").rstrip(".") for c in ("ci_low", "ci_high"))
    assert f"- m: {frac}% of heads (95% CI {lo}-{hi}%) can be removed bottom-first" in report
    assert "at a 1-point margin" in report
    lines = prunable_lines(pr)
    assert any(ln.startswith("m ") and "bottom-first" in ln and f"{frac}% of heads (95% CI {lo}-{hi}%)" in ln
               for ln in lines)
    top = next(ln for ln in lines if "top-first" in ln)
    assert "none shown" in top
    for text in [report] + lines:   # non-significance is never called no loss
        low = text.lower()
        assert "no loss" not in low.replace("evidence of no loss", "") and "matches" not in low
    stats = analysis.read_table(paths["stats"])
    nf = stats[stats.family == "noninferiority"]
    for r in nf.itertuples(index=False):
        cell = f"{100 * r.difference:+.1f} [{100 * r.sim_ci_low:+.1f}] " + ("**yes**" if r.p_adjusted < 0.05 else "no")
        assert cell.replace("+0.0 ", "0.0 ").replace("-0.0 ", "0.0 ") in report, cell


def test_metric_vs_k_draws_the_margin_and_the_prunable_k(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = make_sweep_dir(tmp_path / "s", models={"m": (2, 4)}, seeds=tuple(range(6)), predictions=False,
                          strategies=("none", "bottom", "top"), k_fractions=GRID, trial_sd=0.0015,
                          single_head_arch=False)
    drawn = {}
    orig = Figure.savefig

    def capture(self, fname, *a, **kw):
        drawn.setdefault(str(fname).split("/")[-1].lstrip(".").split(".")[0], self)
        return orig(self, fname, *a, **kw)

    monkeypatch.setattr(Figure, "savefig", capture)
    paths = analysis.analyze(path, execute=False, n_boot=50)
    pr = pd.read_csv(paths["prunable"])
    k = pr.loc[pr.strategy == "bottom", "prunable_k_fraction"].iloc[0]
    labels = [t.get_text() for lg in drawn["metric_vs_k"].legends for t in lg.get_texts()]
    assert "non-inferiority margin (1 point(s) below the baseline)" in labels
    assert "prunable K (every K up to it non-inferior)" in labels
    ax = drawn["metric_vs_k"].axes[0]
    stars = [c for c in ax.collections if c.get_label() == "prunable K (every K up to it non-inferior)"]
    assert len(stars) == 1 and stars[0].get_offsets()[0][0] == pytest.approx(k)
    band = [p for p in ax.patches if "margin" in str(p.get_label())][0]   # axhspan: y in data units
    y0, y1 = band.get_y(), band.get_y() + band.get_height()
    summary = analysis.read_table(paths["summary"])
    b = summary.loc[summary.strategy == "none", "mean"].iloc[0]
    assert y0 == pytest.approx(b - MARGIN, abs=1e-4) and y1 == pytest.approx(b, abs=1e-4)
