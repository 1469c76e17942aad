"""End to end under Ray on CPU: a small sweep, its directory contract, caching and resume."""
import json
import os

import pandas as pd
import pytest
import torch

from headsweep.orchestrator import cli
from headsweep.orchestrator.results import CONTRACT_COLUMNS, read_rows, results_frame

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def finished(tmp_path_factory, ray_session, small_template):
    """Run the small sweep once for the module; returns (sweep_dir, results)."""
    import yaml

    root = tmp_path_factory.mktemp("e2e")
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(small_template))
    rc = cli.main(["run", str(path), "--storage", str(root / "sweeps"), "--no-analysis"])
    assert rc == 0
    sweep_dir = root / "sweeps" / "small"
    return sweep_dir, pd.read_parquet(sweep_dir / "results.parquet")


def test_row_count_equals_grid_and_contract_columns(small_counts, finished):
    SMALL_STAGE_A, SMALL_STAGE_B = small_counts
    sweep_dir, df = finished
    assert len(df) == SMALL_STAGE_A + SMALL_STAGE_B
    assert df["trial_key"].is_unique
    assert set(CONTRACT_COLUMNS) <= set(df.columns)
    csv = pd.read_csv(sweep_dir / "results.csv")
    assert list(csv["trial_key"]) == list(df["trial_key"])
    # every row carries the resolved config, versions and the git hash
    for col in ("config", "versions", "git_hash"):
        assert df[col].notna().all() and (df[col] != "").all()
    assert json.loads(df["versions"].iloc[0])["torch"] == torch.__version__


def test_finetuning_ran_once_per_model_variant_and_seed(small_counts, finished):
    SMALL_STAGE_A, SMALL_STAGE_B = small_counts
    sweep_dir, df = finished
    a = df[df["stage"] == "A"]
    assert len(a) == SMALL_STAGE_A
    assert set(zip(a["variant"], a["seed"])) == {(v, s) for v in ("tiny", "tiny-1head") for s in (0, 1)}
    # each stage-A trial ran exactly once; stage B never trained (no recovery epochs)
    assert (a["attempt"] == 1).all() and (a["train_steps"] > 0).all()
    assert df[df["stage"] == "B"]["train_steps"].isna().all()
    # one checkpoint folder per fine-tune, named by its stage-A key (content, not label)
    assert sorted(os.listdir(sweep_dir / "checkpoints")) == sorted(a["spec_key"])


def test_strategy_rows_and_k(finished):
    _, df = finished
    b = df[df["stage"] == "B"]
    assert sorted(b["strategy"].unique()) == ["random", "single-head", "top"]
    top = b[b["strategy"] == "top"]
    assert (top["k"] == 4).all() and (top["k_fraction"] == 0.25).all()       # 0.25 of 16 heads
    sh = b[b["strategy"] == "single-head"]
    assert (sh["heads_kept"] == 4).all() and (sh["k"] == 12).all()          # one head in each of 4 layers
    base = df[(df["strategy"] == "none")]
    assert set(base["arch"]) == {"multi-head", "single-head"} and (base["k"] == 0).all()
    one = base[base["arch"] == "single-head"]
    assert (one["heads_total"] == 4).all()


def test_predictions_and_importance_files(finished):
    sweep_dir, df = finished
    for key, n in zip(df["trial_key"], df["n_eval"]):
        p = pd.read_parquet(sweep_dir / "predictions" / f"{key}.parquet")
        assert list(p.columns) == ["example_id", "label", "pred", "correct", "prob"]
        assert len(p) == n
    row = df.iloc[0]
    p = pd.read_parquet(sweep_dir / "predictions" / f"{row.trial_key}.parquet")
    assert p["correct"].mean() == pytest.approx(row.accuracy)
    imp = pd.read_parquet(sweep_dir / "importance.parquet")
    assert list(imp.columns) == ["model", "seed", "method", "normalization", "layer", "head", "score", "score_raw"]
    assert len(imp) == 2 * 16 and set(imp["model"]) == {"tiny"}


def recheck_accuracy(sweep_dir, checkpoint: str, heads) -> float:
    """Accuracy of a stage-A checkpoint (``checkpoint``: its stage-A key, the folder's name), loaded by plain transformers, with ``heads`` masked."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from headsweep import trials
    from headsweep.trials.data import Encoded, eval_loader, read_split
    from headsweep.trials.spec import DataSpec
    ckpt = sweep_dir / "checkpoints" / checkpoint
    model = AutoModelForSequenceClassification.from_pretrained(ckpt).eval()
    tok = AutoTokenizer.from_pretrained(ckpt)
    ev = read_split(DataSpec(source="synthetic", synthetic_size=240, max_length=32), "eval")
    correct = 0
    with torch.no_grad(), trials.masked(model, [tuple(h) for h in heads]):
        for b in eval_loader(Encoded(ev, tok, 32), tok.pad_token_id, 64):
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            correct += int((logits.argmax(-1) == b["labels"]).sum())
    return correct / len(ev)


def test_row_rechecks_by_masking_the_checkpoint(finished):
    """DESIGN: any row can be re-checked by masking exactly heads_removed on the stage-A checkpoint."""
    sweep_dir, df = finished
    row = df[(df["strategy"] == "top") & (df["seed"] == 1)].iloc[0]
    assert recheck_accuracy(sweep_dir, row.stage_a_key, json.loads(row.heads_removed)) == pytest.approx(row.accuracy)


def test_rebuilding_results_from_trial_outputs_gives_same_table(finished):
    from headsweep.orchestrator.storage import Store
    sweep_dir, df = finished
    rebuilt = results_frame(read_rows(Store(sweep_dir)))
    pd.testing.assert_frame_equal(rebuilt.reset_index(drop=True), df.reset_index(drop=True))


def test_status_reports_all_done(small_counts, finished, capsys):
    SMALL_STAGE_A, SMALL_STAGE_B = small_counts
    sweep_dir, _ = finished
    assert cli.main(["status", str(sweep_dir), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["stages"]["stage_a"]["done"] == SMALL_STAGE_A
    assert r["stages"]["stage_b"]["done"] == SMALL_STAGE_B
    assert r["errors"] == [] and r["results"].endswith("results.parquet")


def test_rerun_reuses_finished_trials(finished):
    """Running the same sweep again recomputes nothing (trial key = cache key)."""
    sweep_dir, df = finished
    before = {p.name: p.stat().st_mtime_ns for p in (sweep_dir / "trials").glob("*/result.json")}
    rc = cli.main(["run", str(sweep_dir.parent.parent / "sweep.yaml"), "--storage", str(sweep_dir.parent),
                   "--no-analysis"])
    assert rc == 0
    after = {p.name: p.stat().st_mtime_ns for p in (sweep_dir / "trials").glob("*/result.json")}
    assert before == after
    pd.testing.assert_frame_equal(pd.read_parquet(sweep_dir / "results.parquet"), df)


def test_resume_after_a_stop_after_stage_a(small_raw, write_sweep, tmp_path, ray_session, monkeypatch, capsys):
    """Stopped (as by Ctrl+C) once stage A is done: exit 1, says so, and a resume finishes it, the
    analysis and report included. With a grouped-query model beside the small one and
    ``importance.unit: kv_group`` (tiny-llama: 4 layers x 2 KV groups of 4 query heads; for
    DistilBERT a group is a head), the machinery runs unchanged and its rows count groups."""
    small_raw["name"] = "stopped"
    small_raw["single_head_arch"] = False
    small_raw["models"].append({"name": "preset:tiny-llama", "label": "tiny-llama"})
    small_raw["importance"]["unit"] = "kv_group"
    path = write_sweep(small_raw)
    monkeypatch.setenv("HEADSWEEP_FAULT", "driver:stop:stage_a")
    assert cli.main(["run", str(path), "--storage", str(tmp_path / "sw"), "--no-analysis"]) == 1
    err = capsys.readouterr().err
    sweep_dir = tmp_path / "sw" / "stopped"
    partial = pd.read_parquet(sweep_dir / "results.parquet")
    a, b = (partial["stage"] == "A").sum(), (partial["stage"] == "B").sum()
    assert a == 4 and b < 12                     # stage B (running beside A) was stopped too
    assert f"{12 - b} trials did not run (the run was stopped); continue with: headsweep resume" in err
    stamps = {p.parent.name: p.stat().st_mtime_ns for p in (sweep_dir / "trials").glob("*/result.json")}
    monkeypatch.delenv("HEADSWEEP_FAULT")
    assert cli.main(["resume", str(sweep_dir)]) == 0
    df = pd.read_parquet(sweep_dir / "results.parquet")
    assert len(df) == 4 + 4 * 3 and df["trial_key"].is_unique
    # the stage-A trials were not run again
    for key, stamp in stamps.items():
        assert (sweep_dir / "trials" / key / "result.json").stat().st_mtime_ns == stamp
    assert (df[df["stage"] == "A"]["attempt"] == 1).all()
    # K in KV groups: 0.25 of tiny-llama's 8 groups is 2 (8 query heads); single-head keeps one group per layer
    llama = df[(df["model"] == "tiny-llama") & (df["stage"] == "B")].set_index(["strategy", "seed"]).sort_index()
    assert (llama["unit"] == "kv_group").all() and (llama["heads_total"] == 32).all()
    assert (llama.loc["top", "k"] == 2).all() and (llama.loc["top", "heads_kept"] == 24).all()
    assert (llama.loc["single-head", "k"] == 4).all() and (llama.loc["single-head", "heads_kept"] == 16).all()
    assert (llama["kv_cache_bytes_per_token"] < llama["kv_cache_bytes_per_token_total"]).all()
    tiny = df[(df["model"] == "tiny") & (df["strategy"] == "top")]
    assert (tiny["k"] == 4).all() and (tiny["groups_removed"] == tiny["heads_removed"]).all()  # no GQA
    imp = pd.read_parquet(sweep_dir / "importance.parquet")
    assert imp.groupby("model")["head"].nunique().to_dict() == {"tiny": 4, "tiny-llama": 2}
    row = llama.loc[("top", 1)]
    assert recheck_accuracy(sweep_dir, row.stage_a_key, json.loads(row.heads_removed)) == pytest.approx(
        row.accuracy)
    report = (sweep_dir / "analysis" / "report.md").read_text()
    assert "tiny-llama" in report and "Units: **KV groups**" in report
    assert (sweep_dir / "analysis" / "analysis.ipynb").is_file()


def test_a_different_sweep_in_the_same_directory_is_refused(finished, small_raw, write_sweep, capsys):
    sweep_dir, _ = finished
    small_raw["seeds"] = [0, 1, 2]
    path = write_sweep(small_raw, "changed.yaml")
    before = sorted(os.listdir(sweep_dir))
    assert cli.main(["run", str(path), "--storage", str(sweep_dir.parent), "--no-analysis"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a different sweep" in err[0]
    assert sorted(os.listdir(sweep_dir)) == before
