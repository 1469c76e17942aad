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
