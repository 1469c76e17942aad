"""``headsweep plan``: what a sweep will run and roughly what it costs, before it runs.

Prints the grid per model and stage, the peak concurrency per resource type under the file's
``resources`` on the cluster's worker shape (``cluster.yaml`` in the current directory, else the
shape it ships with), and an estimate of wall time, GPU-hours and cost from the editable
throughput table ``orchestrator/throughput.yaml`` (calibrated from ``bench/gpu_check.py``'s output).

The estimate is a model, stated in the output: each trial's examples (fine-tune epochs,
importance, evaluation) over examples/s scaled by tokens per example, plus a fixed overhead per
trial; trials placed on the workers by a greedy simulation (fine-tunes first, then each stage-B
trial once its fine-tune is done, as the driver releases them). Offline: head counts come from
``validate`` (checks.KNOWN_HUB_HEADS), hub dataset sizes from the table.
"""
from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass
from importlib import resources as importlib_resources
from pathlib import Path

import yaml

from headsweep.orchestrator.plan import Plan
from headsweep.orchestrator.storage import redact

TABLE = "throughput.yaml"        # package data of orchestrator
CLUSTER_FILE = "cluster.yaml"     # read from the current directory (the repository root)
TOKENS_PER_WORD, SPECIAL_TOKENS = 1.3, 2


def table_path() -> Path:
    return Path(str(importlib_resources.files("headsweep.orchestrator") / TABLE))


def load_table(path: str | Path | None = None) -> dict:
    return yaml.safe_load(Path(path or table_path()).read_text())


# ---------------------------------------------------------------------------- where trials run

@dataclass(frozen=True)
class Workers:
    name: str            # node type (cluster) or "this machine"
    instance: str | None
    cpu: float
    gpu: float
    count: int
    idle_timeout_s: float
    head: str | None
    source: str          # where the shape came from


def cluster_workers(table: dict, path: str | Path = CLUSTER_FILE) -> Workers:
    """The GPU worker type of ``cluster.yaml`` (if the file is here), else the table's default."""
    p = Path(path)
    if p.is_file():
        cfg = yaml.safe_load(p.read_text()) or {}
        types = cfg.get("available_node_types") or {}
        head = cfg.get("head_node_type")
        gpu_types = [(n, t) for n, t in types.items() if n != head and (t.get("resources") or {}).get("GPU", 0) >= 1]
        if gpu_types:
            name, t = gpu_types[0]
            res = t["resources"]
            count = min(t.get("max_workers", cfg.get("max_workers", 0)), cfg.get("max_workers", 0))
            return Workers(name, (t.get("node_config") or {}).get("InstanceType"), res.get("CPU", 0), res["GPU"],
                           int(count), 60 * float(cfg.get("idle_timeout_minutes", 5)),
                           ((types.get(head) or {}).get("node_config") or {}).get("InstanceType"), str(p))
    d = table["overhead"]["default_cluster"]
    return Workers(d["worker"], d["instance"], d["resources"]["CPU"], d["resources"]["GPU"], d["max_workers"],
                   60 * d["idle_timeout_minutes"], d["head"], f"{TABLE} (no {CLUSTER_FILE} here)")


def local_workers() -> Workers:
    from headsweep.orchestrator.checks import local_capacity
    cpus, gpus = local_capacity(None, None)
    return Workers("this machine", None, cpus, gpus, 1, 0.0, None, "this machine")


def fits(w: Workers, need) -> int:
    """How many trials needing ``need`` (cpu, gpu) one worker holds at once."""
    k = min(w.cpu / need.cpu, w.gpu / need.gpu if need.gpu else math.inf)   # validate: cpu > 0
    return int(math.floor(k + 1e-9))


# ---------------------------------------------------------------------------- how long a trial takes

def shape_key(table: dict, heads) -> str | None:
    """The table's model key for a model of this (type, layers, heads), if any."""
    me = [heads.model_type, heads.n_layers, heads.n_heads]
    for key, shapes in table["shapes"].items():
        shapes = shapes if isinstance(shapes[0], list) else [shapes]
        if me in shapes:
            return key
    return None


def precision(requested: str, device: dict, gpu: bool) -> str:
    """What ``mixed_precision`` resolves to (trials.train: ``auto`` is bf16 on GPUs that support
    it, fp16 on older GPUs, fp32 on the CPU; fp16 on the CPU silently runs fp32)."""
    if not gpu:
        return "bf16" if requested == "bf16" else "no"
    if requested != "auto":
        return requested
    return "bf16" if device.get("bf16") else "fp16"


def data_size(d, table: dict) -> tuple[dict, str] | tuple[None, str]:
    """({"train": rows, "eval": rows, "train_tokens": t, "eval_tokens": t}, how known) or (None, why)."""
    from headsweep.trials.data import SYNTHETIC_SOURCES, is_local_source, read_split
    if d.source in SYNTHETIC_SOURCES or is_local_source(d.source):
        try:
            tr, ev = read_split(d, "train"), read_split(d, "eval")
        except Exception as e:  # validate read them; a failure here only costs the estimate
            return None, f"cannot read the data ({type(e).__name__})"

        def tokens(df):
            words = df["text"].astype(str).str.split().str.len()
            if "text_pair" in df:
                words = words + df["text_pair"].astype(str).str.split().str.len()
            return float(words.mean()) * TOKENS_PER_WORD + SPECIAL_TOKENS
        return {"train": len(tr), "eval": len(ev), "train_tokens": tokens(tr), "eval_tokens": tokens(ev)}, "counted"
    known = (table.get("datasets") or {}).get(d.source.removeprefix("hub:"))
    if not known or d.train not in known["rows"] or d.eval not in known["rows"]:
        return None, f"{d.source}: rows unknown offline; add it under datasets: in {TABLE}"
    return {"train": known["rows"][d.train], "eval": known["rows"][d.eval],
            "train_tokens": known["tokens"][d.train], "eval_tokens": known["tokens"][d.eval]}, TABLE


def seconds_per_example(device: dict, exps: float, tokens: float, max_length: int) -> float:
    """Fine-tune seconds per example at ``tokens`` per example (cut at max_length)."""
    t = max(min(tokens, max_length), device["min_tokens"])
    return t / device["tokens"] / exps


@dataclass(frozen=True)
class Work:
    train: float          # examples through forward + backward (+ optimizer)
    forward: float        # examples through a forward pass only


def importance_work(method: str, n_imp: int, heads_total: int) -> Work:
    """One scoring of ``method`` on ``n_imp`` examples."""
    if method == "ablation":             # one masked forward pass per head
        return Work(0.0, float(n_imp * heads_total))
    if method == "entropy":              # attention entropy: a forward pass
        return Work(0.0, float(n_imp))
    return Work(float(n_imp), 0.0)       # gradient (and unknown): a forward and a backward pass


def finetune_work(ft, size: dict, heads_total: int) -> Work:
    n_imp = ft.importance.examples
    n_train = max(size["train"] - n_imp, 0)
    if ft.data.train_limit:
        n_train = min(n_train, ft.data.train_limit)
    n_eval = min(size["eval"], ft.data.eval_limit or size["eval"])
    methods = ft.importance.method
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    train, forward = ft.train.epochs * n_train, float(n_eval)
    for m in methods:
        w = importance_work(m, n_imp, heads_total)
        train, forward = train + w.train, forward + w.forward
    return Work(train, forward)


def prune_work(spec, size: dict, heads=None) -> Work:
    """A stage-B trial: each row's recovery and evaluation; ``layer-single-head`` has a row per
    layer (keep: best first evaluates every head as its layer's survivor), ``each-head`` one
    evaluation per head, ``iterative`` a row per step and a re-scoring between steps. ``heads``
    (the model's Heads; None: counted as one row) sizes them."""
    from headsweep.trials.strategies import iterative_targets, step_count
    ft = spec.finetune
    n_train = max(size["train"] - ft.importance.examples, 0)
    if ft.data.train_limit:
        n_train = min(n_train, ft.data.train_limit)
    n_eval = float(min(size["eval"], ft.data.eval_limit or size["eval"]))
    rows, forward, train = 1, 0.0, 0.0
    if heads is not None:
        total = heads.n_layers * heads.n_heads
        if spec.strategy == "layer-single-head":
            rows = heads.n_layers
            if spec.keep == "best":
                forward += n_eval * total
        elif spec.strategy == "each-head":
            rows, forward = 0, n_eval * total
        elif spec.strategy == "iterative":
            rows = len(iterative_targets(total, step_count(spec.iterative_step, total), spec.k_grid))
            w = importance_work(spec.importance_method, ft.importance.examples, total)
            train, forward = w.train * (rows - 1), w.forward * (rows - 1)
    return Work(train + spec.recovery_epochs * n_train * rows, forward + n_eval * rows)


def trial_seconds(work: Work, device: dict, exps: float, size: dict, max_length: int, share: float,
                  overhead: float) -> float:
    s_train = seconds_per_example(device, exps, size["train_tokens"], max_length)
    s_fwd = seconds_per_example(device, exps, size["eval_tokens"], max_length) / device["eval_speedup"]
    return (work.train * s_train + work.forward * s_fwd) / share + overhead


# ---------------------------------------------------------------------------- placing trials

@dataclass
class Schedule:
    makespan: float
    busy: dict          # worker index -> (first start, last end)
    gpu_seconds: float
    peak: dict          # "A" / "B" -> most trials running at once


def simulate(a: list, b: list, w: Workers) -> Schedule:
    """Greedy placement. ``a``: [(key, seconds, need)]; ``b``: [(finetune key, seconds, need)].
    Fine-tunes first (longest first); a stage-B trial is ready once its fine-tune ended. A trial
    goes to the first worker with room, so busy workers fill before idle ones are used."""
    free = [[w.cpu, w.gpu] for _ in range(w.count)]
    ready = [("A", *t) for t in sorted(a, key=lambda t: -t[1])]
    waiting: dict[str, list] = {}
    for t in b:
        waiting.setdefault(t[0], []).append(("B", *t))
    running, t_now, busy, gpu_s = [], 0.0, {}, 0.0
    peak, now, order = Counter(), Counter(), 0
    while ready or running:
        left = []
        for trial in ready:
            stage, _, secs, need = trial
            i = next((i for i, f in enumerate(free)
                      if f[0] + 1e-9 >= need.cpu and f[1] + 1e-9 >= need.gpu), None)
            if i is None:
                left.append(trial)
                continue
            free[i][0] -= need.cpu
            free[i][1] -= need.gpu
            order += 1
            heapq.heappush(running, (t_now + secs, order, i, trial))
            busy[i] = (busy[i][0] if i in busy else t_now, busy.get(i, (0.0, 0.0))[1])
            gpu_s += secs * need.gpu
            now[stage] += 1
            peak[stage] = max(peak[stage], now[stage])
        ready = left
        if not running:
            break  # what is left fits no worker (the report checks fit before simulating)
        t_now, _, i, (stage, key, _, need) = heapq.heappop(running)
        free[i][0] += need.cpu
        free[i][1] += need.gpu
        now[stage] -= 1
        busy[i] = (busy[i][0], max(busy[i][1], t_now))
        if stage == "A":
            ready += waiting.pop(key, [])
    return Schedule(t_now, busy, gpu_s, dict(peak))


# ---------------------------------------------------------------------------- the report

def _dur(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def _res(need) -> str:
    return f"{need.cpu:g} CPU" + (f" + {need.gpu:g} GPU" if need.gpu else "")


def plan_report(pl: Plan, table: dict | None = None, cluster_file: str | Path = CLUSTER_FILE) -> list[str]:
    table = table or load_table()
    sweep = pl.sweep
    a = Counter(s.model.label for s in pl.stage_a)
    b = Counter(s.finetune.model.label for s in pl.stage_b)
    lines = [f"plan: {sweep.name} -> {redact(pl.store.root)}",
             f"grid: {len(pl.stage_a)} stage-A fine-tunes, {len(pl.stage_b)} stage-B trials"]
    width = max([len(m) for m in a] + [5])
    for label in a:
        lines.append(f"  {label:<{width}}  {a[label]:>4} fine-tunes  {b.get(label, 0):>5} stage-B trials")
    need = {"A": sweep.resources["finetune"], "B": sweep.resources["prune"]}
    need_b = {s.key: (sweep.resources["finetune"] if s.recovery_epochs else need["B"]) for s in pl.stage_b}
    on_gpu = any(r.gpu for r in sweep.resources.values())
    w = cluster_workers(table, cluster_file) if on_gpu else local_workers()
    where = (f"{w.count} x {w.name} ({w.instance}: {w.cpu:g} CPU, {w.gpu:g} GPU) from {w.source}"
             if on_gpu else f"this machine ({w.cpu:g} CPU, {w.gpu:g} GPU): no GPU asked for")
    lines.append(f"resources: fine-tune {_res(need['A'])}, prune {_res(need['B'])} per trial; workers: {where}")
    fit = {st: fits(w, r) for st, r in need.items()}
    if not all(fit.values()):
        bad = "finetune" if not fit["A"] else "prune"
        return lines + [f"  resources.{bad} ({_res(sweep.resources[bad])}) fits no worker: no estimate"]
    n = {"A": len(pl.stage_a), "B": len(pl.stage_b)}
    peak = {st: min(n[st], fit[st] * w.count) for st in n}
    lines.append("peak concurrency: " + "; ".join(
        f"stage {st} {peak[st]} trials ({fit[st]} per worker) = {peak[st] * need[st].cpu:g} CPU"
        + (f", {peak[st] * need[st].gpu:g} GPU" if need[st].gpu else "") for st in n if n[st]))
    return lines + _estimate(pl, table, w, need, need_b)


def _estimate(pl: Plan, table: dict, w: Workers, need: dict, need_b: dict) -> list[str]:
    sweep, over = pl.sweep, table["overhead"]
    size, how = data_size(sweep.data, table)
    if size is None:
        return [f"estimate: none ({how})"]
    device_of = {st: ("cpu" if not r.gpu else (table["instances"].get(w.instance) or {}).get("gpu"))
                 for st, r in need.items()}
    missing, rate, labels = [], {}, {}
    for m in sweep.models:
        h = pl.heads.get(m.label)
        key = shape_key(table, h) if h else None
        for st, dev_name in device_of.items():
            dev = (table["devices"].get(dev_name) or {}) if dev_name else {}
            prec = precision(sweep.train.mixed_precision, dev, dev_name != "cpu")
            exps = ((dev.get("finetune") or {}).get(key) or {}).get(prec)
            if not exps:
                missing.append(f"{m.label} ({key or 'unknown shape'}) on {dev_name or w.instance} {prec}")
            rate[m.label, st] = (dev, exps)
            labels[st] = f"{dev_name} {prec}"
    if missing:
        return [f"estimate: none: no throughput for {', '.join(sorted(set(missing)))} in {TABLE}"]
    on_cluster = w.instance is not None
    overhead = over["trial_s"] if on_cluster else over["local_trial_s"]
    ml, share = sweep.data.max_length, {st: min(1.0, r.gpu) if r.gpu else 1.0 for st, r in need.items()}
    heads = {lab: h.total for lab, h in pl.heads.items()}
    a_trials, b_trials, per = [], [], {}
    for s in pl.stage_a:
        dev, exps = rate[s.model.label, "A"]
        secs = trial_seconds(finetune_work(s, size, heads.get(s.model.label, 0)), dev, exps, size, ml,
                             share["A"], overhead)
        a_trials.append((s.key, secs, need["A"]))
        per.setdefault(s.model.label, [secs, []])
    for s in pl.stage_b:
        label = s.finetune.model.label
        dev, exps = rate[label, "B"]
        r = need_b[s.key]
        secs = trial_seconds(prune_work(s, size, pl.heads.get(label)), dev, exps, size, ml,
                             min(1.0, r.gpu) if r.gpu else 1.0, overhead)
        b_trials.append((s.finetune.key, secs, r))
        per[label][1].append(secs)
    sched = simulate(a_trials, b_trials, w)
    start = over["node_start_s"] if on_cluster else 0.0
    calibrate = "" if all(r[0].get("calibrated") for r in rate.values()) else \
        " (uncalibrated: bench/gpu_check.sh on that GPU measures it; see the table)"
    lines = [f"estimate from {TABLE}: {', '.join(sorted(set(labels.values())))}{calibrate}",
             f"  data: {size['train']} train / {size['eval']} eval rows ({how}), "
             f"~{size['train_tokens']:.0f} / {size['eval_tokens']:.0f} tokens per example"]
    for label, (ft_s, bs) in per.items():
        lines.append(f"  {label}: fine-tune ~{_dur(ft_s)}" + (f", stage-B trial ~{_dur(sum(bs) / len(bs))}" if bs else ""))
    wall = start + sched.makespan
    lines.append(f"  wall time ~{_dur(wall)}" + (f" (incl. {_dur(start)} to start workers)" if start else "")
                 + (f"; GPU-hours ~{sched.gpu_seconds / 3600:.1f}" if sched.gpu_seconds else ""))
    if on_cluster:
        inst_h = sum(start + end - begin + w.idle_timeout_s for begin, end in sched.busy.values()) / 3600
        prices = table["instances"]
        spot = (prices.get(w.instance) or {}).get("spot")
        head = (prices.get(w.head) or {}).get("on_demand")
        if spot is None:
            lines.append(f"  {len(sched.busy)} workers, ~{inst_h:.1f} instance-hours; no price for {w.instance} in {TABLE}")
        else:
            workers, head_cost = inst_h * spot, (wall / 3600 * head if head else 0.0)
            lines.append(f"  cost ~${workers + head_cost:.2f}: workers ${workers:.2f} ({len(sched.busy)} x {w.instance}, "
                         f"~{inst_h:.1f} h incl. {w.idle_timeout_s / 60:g} idle min each, ${spot:.2f}/h spot)")
            if head:
                lines.append(f"    + head ${head_cost:.2f} ({w.head}, ${head:.3f}/h on-demand, until ray down)")
    return lines
