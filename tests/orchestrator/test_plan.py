"""``headsweep plan``: grid, peak concurrency and a cost estimate, offline, before anything runs.

The expected numbers are computed here by hand from configs/sst2.yaml, cluster.yaml and
orchestrator/throughput.yaml (read as plain YAML), not with orchestrator.estimate or grid.
"""
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SST2 = REPO / "configs" / "sst2.yaml"


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def plan_of(harness, capsys, path, monkeypatch, cwd=REPO):
    monkeypatch.chdir(cwd)   # cluster.yaml is read from the current directory
    return harness.run_cli(["plan", path], capsys)


def number(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in:\n{text}"
    return float(m.group(1))


def test_plan_of_the_real_study(harness, capsys, monkeypatch, offline, offline_and_no_ray):
    rc, out, err = plan_of(harness, capsys, SST2, monkeypatch)
    assert rc == 0, err
    lines = out.splitlines()
    assert 5 <= len(lines) <= 30, out
    sweep = yaml.safe_load(SST2.read_text())
    table = yaml.safe_load((REPO / "orchestrator" / "throughput.yaml").read_text())
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())

    # grid, by hand: per model, seeds x (base + single-head variant) fine-tunes; per seed of the
    # base model: top, bottom, random (x draws) at every K, plus one single-head trial
    seeds, ks, draws = len(sweep["seeds"]), len(sweep["k"]), sweep.get("random_draws", 5)
    ft_per_model = seeds * 2
    b_per_model = seeds * (ks * (2 + draws) + 1)
    assert (ft_per_model, b_per_model) == (10, 320)
    for label in ("gpt2", "distilbert"):
        assert re.search(rf"^\s+{label}\s+{ft_per_model} fine-tunes\s+{b_per_model} stage-B trials$", out, re.M), out
    assert f"{2 * ft_per_model} stage-A fine-tunes, {2 * b_per_model} stage-B trials" in out

    # peak concurrency on cluster.yaml's worker (4 CPU, 1 GPU, max 8)
    worker = cluster["available_node_types"]["ray.worker.gpu"]
    n, cpu, gpu = worker["max_workers"], worker["resources"]["CPU"], worker["resources"]["GPU"]
    res = sweep["resources"]
    per_a = int(min(cpu // res["finetune"]["cpu"], gpu // res["finetune"]["gpu"]))
    per_b = int(min(cpu // res["prune"]["cpu"], gpu // res["prune"]["gpu"]))
    assert (n, per_a, per_b) == (8, 1, 4)
    assert f"stage A {n * per_a} trials ({per_a} per worker) = {n * per_a * res['finetune']['cpu']} CPU, {n * per_a} GPU" in out
    assert f"stage B {n * per_b} trials ({per_b} per worker) = {n * per_b} CPU, {n * per_b * 0.25:g} GPU" in out

    # trial times from the table: examples x (tokens per example, floored at min_tokens) / rate
    dev = table["devices"]["A10G"]
    rows, tok = table["datasets"]["glue/sst2"]["rows"], table["datasets"]["glue/sst2"]["tokens"]
    imp, over = sweep["importance"]["examples"], table["overhead"]["trial_s"]
    scale_train = max(tok["train"], dev["min_tokens"]) / dev["tokens"]
    scale_eval = max(tok["validation"], dev["min_tokens"]) / dev["tokens"] / dev["eval_speedup"]
    secs = {}
    for label, shape in (("gpt2", "gpt2-small"), ("distilbert", "distilbert-base")):
        rate = dev["finetune"][shape]["bf16"]
        trained = sweep["finetune"]["epochs"] * (rows["train"] - imp) + imp   # + importance's backward
        secs[label] = (trained * scale_train / rate + rows["validation"] * scale_eval / rate + over,
                       rows["validation"] * scale_eval / rate / res["prune"]["gpu"] + over)
    gpu_s = sum(ft_per_model * a * res["finetune"]["gpu"] + b_per_model * b * res["prune"]["gpu"]
                for a, b in secs.values())
    assert number(r"GPU-hours ~([\d.]+)", out) == pytest.approx(gpu_s / 3600, abs=0.051)
    assert number(r"gpt2: fine-tune ~(\d+) min", out) == round(secs["gpt2"][0] / 60)
    assert number(r"distilbert: fine-tune ~(\d+) min", out) == round(secs["distilbert"][0] / 60)

    # wall time: no less than the GPU work spread over every GPU, plus starting the workers; a
    # greedy schedule is at most the longest chain (a fine-tune, then a stage-B trial) above that
    start = table["overhead"]["node_start_s"]
    low = start + gpu_s / (n * gpu)
    high = low + max(a for a, _ in secs.values()) + max(b for _, b in secs.values())
    wall = number(r"wall time ~(\d+) min", out) * 60
    assert low - 30 <= wall <= high + 30, (low, wall, high)

    # cost at the stated spot price; the head on demand for the wall time
    inst = cluster["available_node_types"]["ray.worker.gpu"]["node_config"]["InstanceType"]
    spot = table["instances"][inst]["spot"]
    assert f"${spot:.2f}/h spot" in out and inst in out
    inst_h = number(r"~([\d.]+) h incl\.", out)
    workers_cost = number(r"workers \$([\d.]+)", out)
    assert workers_cost == pytest.approx(inst_h * spot, abs=0.03)
    idle_h = cluster["idle_timeout_minutes"] / 60
    assert inst_h >= n * (idle_h + start / 3600) + gpu_s / 3600 / gpu - 0.05   # every worker is billed
    head_price = table["instances"][cluster["available_node_types"]["ray.head.cpu"]["node_config"]["InstanceType"]]["on_demand"]
    head_cost = number(r"head \$([\d.]+)", out)
    assert head_cost == pytest.approx(wall / 3600 * head_price, abs=0.01)
    assert number(r"cost ~\$([\d.]+)", out) == pytest.approx(workers_cost + head_cost, abs=0.011)


def test_plan_without_gpus_is_local_and_short(harness, tmp_path, capsys, monkeypatch, offline, offline_and_no_ray):
    raw = harness.base(tmp_path)
    raw["models"] = [{"name": "preset:tiny-distilbert-random", "label": "tiny"}]
    rc, out, err = plan_of(harness, capsys, harness.write(tmp_path, raw), monkeypatch, cwd=tmp_path)
    assert rc == 0, err
    assert "this machine" in out and "$" not in out and len(out.splitlines()) <= 30
    # SMALL: 2 variants (single_head_arch) x 2 seeds; per seed: top, random, single-head at 1 K
    assert "4 stage-A fine-tunes, 6 stage-B trials" in out
    assert not (tmp_path / "out").exists()


def test_plan_with_no_throughput_says_so(harness, tmp_path, capsys, monkeypatch, offline, offline_and_no_ray):
    raw = harness.base(tmp_path)
    raw["resources"] = {"finetune": {"cpu": 1, "gpu": 1}, "prune": {"cpu": 1, "gpu": 0.5}}
    raw["finetune"]["mixed_precision"] = "fp16"
    table = yaml.safe_load((REPO / "orchestrator" / "throughput.yaml").read_text())
    del table["devices"]["A10G"]["finetune"]["tiny"]
    from headsweep.orchestrator import estimate
    monkeypatch.setattr(estimate, "load_table", lambda path=None: table)
    rc, out, err = plan_of(harness, capsys, harness.write(tmp_path, raw), monkeypatch, cwd=tmp_path)
    assert rc == 0, err
    assert "estimate: none: no throughput for tiny" in out and "A10G fp16" in out


@pytest.mark.parametrize("mutate, expected", [
    (lambda raw: raw.update(k=[1.5]), [("k[0]:", "(0, 1)", "1.5")]),
    (lambda raw: raw["finetune"].update(epochs=0), [("finetune.epochs:", "> 0", "got 0)")]),
    (lambda raw: raw.update(strategies=["topp"]), [("strategies[0]:", "did you mean 'top'", "'topp'")]),
])
def test_plan_refuses_bad_input_like_validate(harness, tmp_path, capsys, monkeypatch, mutate, expected,
                                              offline, offline_and_no_ray):
    raw = harness.base(tmp_path)
    mutate(raw)
    rc, out, err = plan_of(harness, capsys, harness.write(tmp_path, raw), monkeypatch, cwd=tmp_path)
    harness.assert_refused(rc, out, err, expected, tmp_path=tmp_path)


def test_plan_of_a_missing_file(harness, tmp_path, capsys, monkeypatch, offline, offline_and_no_ray):
    rc, out, err = plan_of(harness, capsys, tmp_path / "nope.yaml", monkeypatch, cwd=tmp_path)
    assert rc == 2 and len(harness.error_lines(err)) == 1 and "nope.yaml" in err and "Traceback" not in err


def test_plan_counts_every_evaluation_of_the_multi_row_trials(harness, tmp_path, capsys, monkeypatch, offline,
                                                              offline_and_no_ray):
    """each-head evaluates every head alone; layer-single-head keep: best tries every head as its
    layer's survivor, then evaluates a row per layer; iterative evaluates a row per step (every
    grid K, steps of at most 10%) and re-scores gradient importance between steps. Counted by hand
    for distilbert (6 x 12 = 72 heads) on SST-2's table sizes."""
    sweep = yaml.safe_load(SST2.read_text())
    table = yaml.safe_load((REPO / "orchestrator" / "throughput.yaml").read_text())
    dev = table["devices"]["A10G"]
    rows, tok = table["datasets"]["glue/sst2"]["rows"], table["datasets"]["glue/sst2"]["tokens"]
    rate, over = dev["finetune"]["distilbert-base"]["bf16"], table["overhead"]["trial_s"]
    eval_s = max(tok["validation"], dev["min_tokens"]) / dev["tokens"] / dev["eval_speedup"] / rate / 0.25
    train_s = max(tok["train"], dev["min_tokens"]) / dev["tokens"] / rate / 0.25
    n_eval, imp = rows["validation"], sweep["importance"]["examples"]
    # iterative, K 10%..90% of 72 = 7, 14, 22, 29, 36, 43, 50, 58, 65 heads; 7 a step, stopping at each
    steps = [7, 14, 21, 22, 29, 36, 43, 50, 57, 58, 65, 72]
    want = {"each-head": n_eval * 72 * eval_s + over,
            "best": (n_eval * 72 + n_eval * 6) * eval_s + over,
            "iterative": n_eval * len(steps) * eval_s + imp * (len(steps) - 1) * train_s + over}
    for name, changes in (("each-head", {"strategies": ["each-head"]}),
                          ("best", {"strategies": ["layer-single-head"], "layer_single_head": {"keep": "best"}}),
                          ("iterative", {"strategies": ["iterative"], "iterative": {"step": 0.1}})):
        raw = {**sweep, "seeds": [0], "single_head_arch": False, "storage": str(tmp_path / "out"), **changes}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        rc, out, err = plan_of(harness, capsys, path, monkeypatch)
        assert rc == 0, err
        m = re.search(r"distilbert: fine-tune ~[^,]+, stage-B trial ~(\d+) (s|min)", out)
        assert m, out
        got = float(m.group(1)) * (60 if m.group(2) == "min" else 1)
        assert got == pytest.approx(want[name], abs=30 if m.group(2) == "min" else 0.5), (name, want[name], out)
