"""Metrics (trials.metrics) against scikit-learn, scipy and hand formulas; the task loss against
transformers' own loss, classification and regression."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from headsweep.trials.metrics import METRICS, applicable, compute, mcc, pearson, spearman, task_loss


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_mcc_equals_scikit_learn(rng, n_classes):
    sklearn = pytest.importorskip("sklearn.metrics")
    for _ in range(20):
        n = int(rng.integers(5, 200))
        labels = rng.integers(0, n_classes, n)
        # predictions right about 60 % of the time, so the correlation is not ~0
        preds = np.where(rng.random(n) < 0.6, labels, rng.integers(0, n_classes, n))
        assert mcc(labels, preds, n_classes) == pytest.approx(sklearn.matthews_corrcoef(labels, preds), abs=1e-12)


def test_mcc_by_hand_and_degenerate_cases():
    # binary: tp=3, tn=2, fp=1, fn=2 -> (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn))
    labels = np.array([1, 1, 1, 1, 1, 0, 0, 0])
    preds = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    want = (3 * 2 - 1 * 2) / np.sqrt((3 + 1) * (3 + 2) * (2 + 1) * (2 + 2))
    assert mcc(labels, preds) == pytest.approx(want, abs=1e-12)
    assert mcc(labels, labels) == pytest.approx(1.0) and mcc(labels, 1 - labels) == pytest.approx(-1.0)
    assert mcc(labels, np.ones(8, dtype=int)) == 0.0          # one predicted class: undefined -> 0, as sklearn


def test_pearson_and_spearman_equal_scipy_and_hand_formulas(rng):
    stats = pytest.importorskip("scipy.stats")
    import pandas as pd
    for _ in range(10):
        n = int(rng.integers(3, 300))
        labels = rng.normal(size=n)
        preds = 0.5 * labels + rng.normal(size=n)
        preds[: n // 4] = np.round(preds[: n // 4])           # ties, for the rank correlation
        assert pearson(labels, preds) == pytest.approx(stats.pearsonr(labels, preds).statistic, abs=1e-12)
        assert spearman(labels, preds) == pytest.approx(stats.spearmanr(labels, preds).statistic, abs=1e-12)
        # independently: the correlation coefficient of the values, and of their average ranks
        assert pearson(labels, preds) == pytest.approx(np.corrcoef(labels, preds)[0, 1], abs=1e-10)
        ranks = [pd.Series(x).rank().to_numpy() for x in (labels, preds)]
        assert spearman(labels, preds) == pytest.approx(np.corrcoef(*ranks)[0, 1], abs=1e-10)
    assert np.isnan(pearson(np.arange(5.0), np.ones(5)))       # constant predictions: undefined


def test_compute_gives_every_applicable_metric(rng):
    labels, preds = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    out = compute(labels, preds, 3)
    assert set(out) == set(applicable(3)) == {"accuracy", "f1", "mcc"}
    assert out["accuracy"] == pytest.approx(np.mean(labels == preds))
    y = rng.normal(size=30)
    reg = compute(y, y + rng.normal(size=30), 1)
    assert set(reg) == {"pearson", "spearman"} and -1 <= reg["pearson"] <= 1
    assert list(METRICS) == ["accuracy", "f1", "mcc", "pearson", "spearman"]


@pytest.mark.parametrize("num_labels", [1, 3])
def test_task_loss_is_the_models_own_loss(num_labels):
    from transformers import AutoModelForSequenceClassification, BertConfig
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, num_labels=num_labels)
    model = AutoModelForSequenceClassification.from_config(cfg).eval()
    ids = torch.randint(1, 50, (6, 7))
    labels = torch.randn(6) if num_labels == 1 else torch.randint(0, num_labels, (6,))
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
    assert float(task_loss(out.logits, labels)) == pytest.approx(float(out.loss), rel=1e-6)
    per_example = task_loss(out.logits, labels, reduction="none")
    assert per_example.shape == (6,) and float(per_example.mean()) == pytest.approx(float(out.loss), rel=1e-6)


def test_a_regression_task_end_to_end(tmp_path):
    """Smoke: num_labels 1 fine-tunes with the MSE loss; the row's loss is the MSE of its own
    predictions and its pearson/spearman are scipy's on them; no classification metric."""
    import pandas as pd
    from scipy import stats

    from headsweep.trials import layout
    from headsweep.trials.run import run_finetune
    from headsweep.trials.spec import DataSpec, FinetuneSpec, ImportanceSpec, ModelSpec, TrainSpec
    from headsweep.trials.synthetic import synthetic_sentiment
    for split, n, seed in (("train", 400, 0), ("validation", 80, 1)):
        df = synthetic_sentiment(n, seed=seed)
        noise = np.random.default_rng(seed).normal(0, 0.1, n)
        df.assign(score=df["label"] * 4.0 + 0.5 + noise)[["sentence", "score"]].to_csv(
            tmp_path / f"{split}.tsv", sep="\t", index=False)
    data = DataSpec(source=str(tmp_path), label_column="score", num_labels=1, max_length=32)
    spec = FinetuneSpec(model=ModelSpec(name="preset:tiny-bert-random"), data=data,
                        train=TrainSpec(epochs=2, lr=2e-3, batch_size=32, mixed_precision="no"),
                        importance=ImportanceSpec(examples=16), seed=0, metric="pearson")
    out = tmp_path / "out"
    (row,) = run_finetune(spec, out)
    preds = pd.read_parquet(out / layout.predictions_file(row["trial_key"]))
    assert row["metric"] == "pearson" and row["n_eval"] == 80
    assert row["accuracy"] is None and row["mcc"] is None
    assert row["loss"] == pytest.approx(float(np.mean((preds["pred"] - preds["label"]) ** 2)), rel=1e-5)
    assert row["pearson"] == pytest.approx(stats.pearsonr(preds["label"], preds["pred"]).statistic, abs=1e-9)
    assert row["spearman"] == pytest.approx(stats.spearmanr(preds["label"], preds["pred"]).statistic, abs=1e-9)
    assert preds["correct"].isna().all() and preds["pred"].nunique() > 1    # real-valued predictions
