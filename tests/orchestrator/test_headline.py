"""The end-of-run headline lines (orchestrator/headline.py)."""
import math

import pandas as pd

from headsweep.orchestrator.headline import headline_lines


def _table(models, methods):
    rows = [{"model": m, "importance_method": meth, "metric": "accuracy", "k_fraction": 0.5,
             "baseline_mean": 0.9, "top_mean": 0.6, "top_difference": -0.3, "top_p_adjusted": 0.0004,
             "bottom_mean": 0.88, "bottom_difference": -0.02, "bottom_p_adjusted": 0.5,
             "random_mean": math.nan, "random_difference": math.nan, "random_p_adjusted": math.nan}
            for m in models for meth in methods]
    return pd.DataFrame(rows)


def test_labels_are_never_cut_and_columns_stay_aligned():
    lines = headline_lines(_table(["tiny-distilbert", "a-much-longer-model-label"], ["ablation", "gradient"]))
    body = lines[2:]
    assert [line.split("  ")[0] for line in body] == [
        "tiny-distilbert [ablation]", "tiny-distilbert [gradient]",
        "a-much-longer-model-label [ablation]", "a-much-longer-model-label [gradient]"]
    assert len({line.index("50%") for line in lines[2:]}) == 1              # K in one column
    assert lines[1].index(" K") + 1 == body[0].index("50%") + 2            # under its header
    assert "60.0 (-30.0, <0.001)" in body[0] and "- (-, -)" in body[0]


def test_one_method_keeps_the_plain_label_and_the_demo_width():
    lines = headline_lines(_table(["tiny-gpt2"], ["gradient"]))
    assert lines[2].startswith("tiny-gpt2" + " " * 9 + " ")                 # 18 wide, as the README shows
    assert "[gradient]" not in lines[2]


def test_a_tiny_difference_is_never_plus_zero():
    t = _table(["m"], ["gradient"]).assign(bottom_difference=0.0004)
    assert "88.0 (0.0, 0.500)" in headline_lines(t)[2]


def test_print_headline_adds_the_prunable_fractions(tmp_path):
    """After the table: per model and strategy how many heads can go, from the prunable.csv that
    analyze wrote (a 'none shown' line where not even the smallest K is shown within the margin)."""
    import io

    from headsweep import analysis
    from headsweep.analysis.synthetic import make_sweep_dir
    from headsweep.orchestrator.headline import print_headline

    path = make_sweep_dir(tmp_path / "s", models={"m": (2, 4)}, seeds=tuple(range(6)), predictions=False,
                          strategies=("none", "top", "bottom"), k_fractions=(0.25, 0.5), trial_sd=0.0015,
                          single_head_arch=False)
    paths = analysis.analyze(path, execute=False, n_boot=100)
    out = io.StringIO()
    print_headline(paths, out)
    lines = out.getvalue().splitlines()
    pr = pd.read_csv(paths["prunable"]).set_index("strategy")
    at = next(i for i, ln in enumerate(lines) if ln.startswith("how many heads can go (at a 1-point margin"))
    assert at == 3 and len(lines) == at + 1 + len(pr)   # headline (title, header, one model), then the fractions
    frac = f"{100 * pr.loc['bottom', 'prunable_k_fraction']:.1f}".rstrip("0").rstrip(".")
    assert any(ln.startswith("m ") and "bottom-first" in ln and f" {frac}% of heads (95% CI" in ln
               for ln in lines[at + 1:])
    assert any("top-first" in ln and "none shown" in ln for ln in lines[at + 1:])
