"""Sweep file (YAML) -> a validated, fully resolved ``Sweep``.

Every problem becomes one line naming the key and the value; nothing is launched or written
while any remain. Keys are part of the contract (docs/design.md "The sweep file").
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from headsweep.orchestrator.readers import (NoAliasDumper, Problems, boolean, number, read_fields, section, string,
                                            unknown_keys)
from headsweep.orchestrator.storage import USE_ENVIRONMENT, has_credentials, redact
from headsweep.trials.errors import UserError
from headsweep.trials.metrics import METRICS, REGRESSION
from headsweep.trials.schema import CLASSIC_STRATEGIES, REMOVAL_STRATEGIES
from headsweep.trials.spec import (NORMALIZE, SINGLE_HEAD_INITS, DataSpec, ImportanceSpec, IterativeSpec,
                                   LayerSingleHeadSpec, ModelSpec, TrainSpec, default_label, num)
from headsweep.trials.strategies import STRATEGIES, k_problem
from headsweep.trials.tasks import task_for

MODEL_KEYS = ("name", "label", "tokenizer", "trust_remote_code", "gguf_file", "revision")
RESOURCE_STAGES = ("finetune", "prune")
TOP_KEYS = ("name", "models", "data", "importance", "finetune", "strategies", "k", "per_layer",
            "seeds", "single_head_arch", "resources", "storage", "max_failures", "trust_remote_code",
            "tracking", "metric", "random_draws", "iterative", "layer_single_head", "measure_speed",
            "save_pruned", "analysis")
TRACKERS = ("mlflow", "tensorboard", "wandb")
STORAGE_SCHEMES = ("s3", "gs", "gcs", "file", "hdfs")
UNSUPPORTED_SCHEME = "unsupported scheme; use a local path, s3://, gs:// or file://"
# Names that become folder names or path parts (the sweep's name, model labels): ASCII letters,
# digits, '.', '_' and '-', never '.' or '..', so no name can leave the sweep root (docs/design.md).
SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
SAFE_NAME_RULE = "use ASCII letters, digits, '.', '_' and '-' only (at most 100), and not '.' or '..'"
WANDB_SECRET_KEYS = ("api_key", "key", "token", "password")   # W&B credentials belong in the environment
PROVENANCE = "provenance"   # spec.yaml's record of the inputs (orchestrator/provenance.py); ignored on input


def safe_name(v) -> bool:
    return isinstance(v, str) and bool(SAFE_NAME.fullmatch(v)) and v not in (".", "..")


@dataclass(frozen=True)
class Resources:
    cpu: float = 1
    gpu: float = 0

    def as_ray(self) -> dict:
        return {"cpu": self.cpu, "gpu": self.gpu}


def _default_resources() -> dict:
    return {stage: Resources() for stage in RESOURCE_STAGES}


@dataclass(frozen=True)
class TrackingSpec:
    """Experiment trackers, through Ray Tune's own callbacks (orchestrator/tracking.py)."""
    mlflow: str | None = None       # a tracking URI; "" = a local file store in the sweep directory
    tensorboard: bool = False       # event files in the sweep directory
    wandb: dict | None = field(default=None, hash=False)   # WandbLoggerCallback options (project, ...)

    def to_yaml_dict(self) -> dict:
        out = {}
        if self.mlflow is not None:
            out["mlflow"] = self.mlflow or True
        if self.tensorboard:
            out["tensorboard"] = True
        if self.wandb is not None:
            out["wandb"] = dict(self.wandb) or True
        return out


@dataclass(frozen=True)
class AnalysisSpec:
    """``analysis: {margin: 0.01}``: settings of the analysis that must be fixed before the sweep runs.

    margin: the non-inferiority margin in units of the primary metric (0.01 = 1 point): a K is
    "prunable" when its loss against the unpruned model is shown smaller than this (analysis/
    equivalence.py; its DEFAULT_MARGIN equals this default, a test checks)."""
    margin: float = num(0.01, lo=0, lo_open=True, hi=1, hi_open=True)


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file with every default filled in (what ``spec.yaml`` holds).

    The defaults here are the sweep file's defaults; ``parse`` reads them from this class.
    """
    name: str = "sweep"
    models: tuple[ModelSpec, ...] = ()
    data: DataSpec = DataSpec()
    importance: ImportanceSpec = ImportanceSpec()
    train: TrainSpec = TrainSpec()
    recovery_epochs: tuple[float, ...] = (0.0,)
    strategies: tuple[str, ...] = CLASSIC_STRATEGIES
    k: tuple[int | float, ...] = (0.1, 0.25, 0.5, 0.75)
    per_layer: bool = False
    seeds: tuple[int, ...] = (0,)
    single_head_arch: str | None = None   # None or a SINGLE_HEAD_INITS value
    resources: dict[str, Resources] = field(default_factory=_default_resources, hash=False)
    storage: str = "./sweeps"
    max_failures: int = 2
    trust_remote_code: bool = False       # the default of models[].trust_remote_code
    tracking: TrackingSpec = TrackingSpec()
    metric: str = "accuracy"              # the primary metric (trials.metrics.METRICS)
    random_draws: int = 5                 # random-K masks per (checkpoint, K)
    iterative: IterativeSpec = IterativeSpec()
    layer_single_head: LayerSingleHeadSpec = LayerSingleHeadSpec()
    measure_speed: bool = False           # latency ratio of the physically pruned model per stage-B row
    save_pruned: bool = False             # stage-B pruned models saved as HF checkpoints
    analysis: AnalysisSpec = AnalysisSpec()   # declared before the sweep, recorded in spec.yaml

    def to_yaml_dict(self) -> dict:
        """The resolved sweep in the sweep-file layout (what ``spec.yaml`` holds)."""
        ft = dataclasses.asdict(self.train)
        ft["recovery_epochs"] = _scalar_or_list(self.recovery_epochs)
        importance = dataclasses.asdict(self.importance)
        importance["method"] = _scalar_or_list(self.importance.method)
        return {
            "name": self.name,
            "models": [{k: v for k, v in dataclasses.asdict(m).items() if k not in ("single_head", "scratch")}
                       for m in self.models],
            "data": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.data).items()},
            "importance": importance,
            "finetune": ft,
            "strategies": list(self.strategies),
            "k": list(self.k),
            "per_layer": self.per_layer,
            "seeds": list(self.seeds),
            "single_head_arch": {"init": self.single_head_arch} if self.single_head_arch else False,
            "resources": {s: dataclasses.asdict(r) for s, r in self.resources.items()},
            "storage": self.storage,
            "max_failures": self.max_failures,
            "metric": self.metric,
            "random_draws": self.random_draws,
            "iterative": dataclasses.asdict(self.iterative),
            "layer_single_head": {"keep": _scalar_or_list(self.layer_single_head.keep)},
            "measure_speed": self.measure_speed,
            "save_pruned": self.save_pruned,
            "analysis": dataclasses.asdict(self.analysis),
            **({"tracking": self.tracking.to_yaml_dict()} if self.tracking.to_yaml_dict() else {}),
        }

    def to_yaml(self) -> str:
        return yaml.dump(self.to_yaml_dict(), Dumper=NoAliasDumper, sort_keys=False)


DEFAULT = Sweep()


def _scalar_or_list(values):
    return values[0] if len(values) == 1 else list(values)


# ---------------------------------------------------------------------------- sections

def _models(raw, p: Problems, trust_default: bool, suggested: set) -> tuple[ModelSpec, ...]:
    if "models" not in raw:
        if "models" not in suggested:  # a misspelt 'models' was reported already
            p.add("models", None, "missing; list the models to study, e.g. models: [{name: gpt2}]")
        return ()
    models = raw["models"]
    if isinstance(models, str) and models.strip():
        models = [models]  # one model given by name, as k: 0.5 or seeds: 0 give one value
    if not isinstance(models, list) or not models:
        p.add("models", models, "must be a non-empty list of models, e.g. [{name: gpt2}]")
        return ()
    out, seen = [], {}
    for i, m in enumerate(models):
        key = f"models[{i}]"
        if isinstance(m, str):
            m = {"name": m}
        if not isinstance(m, dict):
            p.add(key, m, "must be a model name or a mapping with a 'name'")
            continue
        hinted = unknown_keys(m, MODEL_KEYS, f"{key}.", p)
        if "name" not in m and "name" in hinted:
            continue
        if "name" not in m:
            p.add(f"{key}.name", None, "missing; every model needs a name (hub id, directory or preset:)")
            continue
        name = string(f"{key}.name", m.get("name"), p)
        label = m.get("label") or (default_label(name) if name else None)
        if label is not None:
            label = string(f"{key}.label", label, p)
        tok = m.get("tokenizer")
        if tok is not None:
            tok = string(f"{key}.tokenizer", tok, p)
        trust = boolean(f"{key}.trust_remote_code", m.get("trust_remote_code", trust_default), p)
        gguf = m.get("gguf_file")
        if gguf is not None:
            gguf = string(f"{key}.gguf_file", gguf, p)
        revision = m.get("revision")
        if revision is not None:
            revision = string(f"{key}.revision", revision, p)
        if label and not safe_name(label):
            why = "" if "label" in m else " (the label comes from the name; set 'label:')"
            p.add(f"{key}.label", label, f"{SAFE_NAME_RULE}: it names folders and results rows{why}")
            label = None
        if name and label:
            if label.lower() in seen:
                p.add(f"{key}.label", label, f"duplicate model label (models[{seen[label.lower()]}] has it too, "
                                             "letter case aside); set 'label:' to tell the models apart")
            else:
                seen[label.lower()] = i
            out.append(ModelSpec(name=name, label=label, tokenizer=tok, trust_remote_code=bool(trust),
                                 gguf_file=gguf, revision=revision))
    return tuple(out)


def _variant_clashes(models: tuple[ModelSpec, ...], single_head_arch: str | None, p: Problems) -> None:
    """A model whose label equals another model's variant name (``a`` with ``single_head_arch``
    makes ``a-1head``, a model labelled ``a-1head`` too) would make two kinds of rows look alike."""
    if not single_head_arch:
        return
    made = {f"{m.label}-1head".lower(): m.label for m in models}
    if single_head_arch == "scratch":
        made |= {f"{m.label}-scratch".lower(): m.label for m in models}
    for i, m in enumerate(models):
        if m.label.lower() in made:
            p.add(f"models[{i}].label", m.label, f"clashes with the variant '{m.label}' that single_head_arch "
                                                 f"makes of model '{made[m.label.lower()]}'; choose another label")


def _data(raw, p: Problems) -> tuple[DataSpec, str | None]:
    """The data section, with what a known task (glue/<task>, synthetic-pairs) implies filled in
    for every key the file leaves out; and the task's primary metric (None: no known task)."""
    sec = section(raw, "data", p)
    fields = read_fields(DataSpec, sec, "data", p)
    try:
        task = task_for(fields.get("source", DataSpec.source))
    except UserError as e:
        p.add(e.key, e.value, e.problem)
        task = None
    if task is not None:
        for k, v in task.data_defaults().items():
            if k not in sec:
                fields[k] = v
    return DataSpec(**fields), (task.metric if task is not None else None)


def _metric(raw, p: Problems, data: DataSpec, task_metric: str | None) -> tuple[str, DataSpec]:
    """The primary metric, and the data spec with num_labels 1 for a regression metric.

    ``pearson``/``spearman`` make the task a regression (num_labels 1, MSE loss); num_labels 1
    without a metric means pearson."""
    given = "metric" in raw
    metric = raw.get("metric", task_metric or DEFAULT.metric)
    if not isinstance(metric, str) or metric not in METRICS:
        e = METRICS.error(metric, "metric")
        p.add(e.key, e.value, e.problem)
        return DEFAULT.metric, data
    labels_given = "num_labels" in (raw.get("data") or {}) if isinstance(raw.get("data"), dict) else False
    if metric in REGRESSION and data.num_labels != 1:
        if labels_given:
            p.add("data.num_labels", data.num_labels, f"metric {metric} is a regression metric: "
                                                      "num_labels must be 1 (or leave it out)")
        return metric, dataclasses.replace(data, num_labels=1)
    if data.num_labels == 1 and metric not in REGRESSION:
        if given:
            p.add("metric", metric, f"num_labels 1 is a regression task: the metric must be one of "
                                    f"{', '.join(REGRESSION)}")
        return REGRESSION[0], data
    return metric, data


def _recovery(section: dict, p: Problems) -> tuple[float, ...]:
    v = section.get("recovery_epochs", _scalar_or_list(DEFAULT.recovery_epochs))
    values = v if isinstance(v, list) else [v]
    out = []
    for i, x in enumerate(values):
        key = "finetune.recovery_epochs" + (f"[{i}]" if isinstance(v, list) else "")
        x = number(key, x, p, lo=0)
        if x is not None:
            out.append(float(x))
    if len(set(out)) != len(out):
        p.add("finetune.recovery_epochs", v, "values must be unique")
    return tuple(dict.fromkeys(out)) or (0.0,)


def _strategies(raw, p) -> tuple[str, ...]:
    v = raw.get("strategies", list(DEFAULT.strategies))
    if isinstance(v, str) and v.strip():
        v = [v]  # one strategy given by name
    if not isinstance(v, list) or not v:
        p.add("strategies", v, "must be a non-empty list")
        return ()
    out = []
    for i, s in enumerate(v):
        if s not in STRATEGIES:
            e = STRATEGIES.error(s, f"strategies[{i}]")
            p.add(e.key, e.value, e.problem)
        elif s in out:
            p.add(f"strategies[{i}]", s, "listed twice")
        else:
            out.append(s)
    return tuple(out)


def _ks(raw, p, strategies) -> tuple[int | float, ...]:
    v = raw.get("k", list(DEFAULT.k))
    values = v if isinstance(v, list) else [v]
    out, before = [], len(p.lines)
    if not values:
        p.add("k", v, "must list at least one K (an integer head count or a fraction in (0, 1))")
        return ()
    for i, k in enumerate(values):
        key = f"k[{i}]" if isinstance(v, list) else "k"
        problem = k_problem(k)
        if problem:
            p.add(key, k, problem)
        elif k in out:
            p.add(key, k, "listed twice")
        else:
            out.append(k)
    if len(p.lines) == before and any(s in strategies for s in REMOVAL_STRATEGIES) \
            and not [k for k in out if k]:
        p.add("k", v, f"{'/'.join(REMOVAL_STRATEGIES)} need at least one K > 0")
    return tuple(out)


def _seeds(raw, p) -> tuple[int, ...]:
    v = raw.get("seeds", list(DEFAULT.seeds))
    values = v if isinstance(v, list) else [v]
    out = []
    if not values:
        p.add("seeds", v, "must list at least one seed")
        return ()
    for i, s in enumerate(values):
        key = f"seeds[{i}]" if isinstance(v, list) else "seeds"
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            p.add(key, s, "must be a non-negative integer")
        elif s in out:
            p.add(key, s, "duplicate seed")
        else:
            out.append(s)
    return tuple(out)


def _single_head_arch(raw, p) -> str | None:
    v = raw.get("single_head_arch", False)
    if v is False or v is None:
        return None
    if v is True:
        return SINGLE_HEAD_INITS[0]
    if isinstance(v, dict):
        unknown_keys(v, ("init",), "single_head_arch.", p)
        return string("single_head_arch.init", v.get("init", SINGLE_HEAD_INITS[0]), p, choices=SINGLE_HEAD_INITS)
    p.add("single_head_arch", v, "must be false, true, or {init: X} with X one of " + ", ".join(SINGLE_HEAD_INITS))
    return None


def _resources(raw, p) -> dict[str, Resources]:
    sec = section(raw, "resources", p)
    unknown_keys(sec, RESOURCE_STAGES, "resources.", p)
    defaults = DEFAULT.resources
    out = {}
    for stage in RESOURCE_STAGES:
        r = sec.get(stage, {}) or {}
        if not isinstance(r, dict):
            p.add(f"resources.{stage}", r, "must be a mapping {cpu: N, gpu: N}")
            r = {}
        unknown_keys(r, ("cpu", "gpu"), f"resources.{stage}.", p)
        cpu = number(f"resources.{stage}.cpu", r.get("cpu", defaults[stage].cpu), p, lo=0, lo_open=True)
        gpu = number(f"resources.{stage}.gpu", r.get("gpu", defaults[stage].gpu), p, lo=0)
        if gpu is not None and gpu > 1 and not float(gpu).is_integer():
            p.add(f"resources.{stage}.gpu", gpu, "a fractional GPU share must be <= 1 (Ray cannot split "
                                                 "a trial across GPUs)")
            gpu = None
        out[stage] = Resources(cpu if cpu is not None else defaults[stage].cpu,
                               gpu if gpu is not None else defaults[stage].gpu)
    return out


def _tracking(raw, p) -> TrackingSpec:
    sec = section(raw, "tracking", p)
    unknown_keys(sec, TRACKERS, "tracking.", p)
    mlflow = sec.get("mlflow")
    if mlflow is True:
        mlflow = ""
    elif mlflow is False:
        mlflow = None
    elif mlflow is not None and not (isinstance(mlflow, str) and mlflow.strip()):
        p.add("tracking.mlflow", mlflow, "must be true or a tracking URI (file:///..., http://...)")
        mlflow = None
    elif mlflow and has_credentials(mlflow):
        p.add("tracking.mlflow", redact(mlflow), USE_ENVIRONMENT)
        mlflow = None
    tensorboard = boolean("tracking.tensorboard", sec.get("tensorboard", False), p)
    wandb = sec.get("wandb")
    if wandb is True:
        wandb = {}
    elif wandb is False:
        wandb = None
    elif wandb is not None and not isinstance(wandb, dict):
        p.add("tracking.wandb", wandb, "must be true or a mapping of WandbLoggerCallback options, "
                                       "e.g. {project: heads}")
        wandb = None
    if isinstance(wandb, dict):
        for k in [k for k in wandb if str(k).lower() in WANDB_SECRET_KEYS]:
            p.add(f"tracking.wandb.{k}", "***", USE_ENVIRONMENT)
            wandb = None
    return TrackingSpec(mlflow=mlflow, tensorboard=bool(tensorboard), wandb=wandb)


def _importance_section(raw, p: Problems) -> dict:
    """The importance section; the key it replaced (``normalize_per_layer``) is one clear line."""
    sec = section(raw, "importance", p)
    if "normalize_per_layer" in sec:
        p.add("importance.normalize_per_layer", sec["normalize_per_layer"],
              f"replaced by importance.normalize: {' | '.join(NORMALIZE)} (auto: each method's own, "
              "gradient layer_l2, ablation and entropy none)")
        sec = {k: v for k, v in sec.items() if k != "normalize_per_layer"}
    return sec


def parse(raw: Any, p: Problems) -> Sweep | None:
    """Structure and types only (no file system, no network). ``None`` if any problem."""
    if not isinstance(raw, dict):
        p.add("(sweep file)", raw if raw is None else type(raw).__name__,
              "must be a YAML mapping of sweep keys (name:, models:, data:, ...)")
        return None
    raw = {k: v for k, v in raw.items() if k != PROVENANCE}  # written by headsweep into spec.yaml
    suggested = unknown_keys(raw, TOP_KEYS, "", p)
    name = string("name", raw.get("name", DEFAULT.name), p)
    if name and not safe_name(name):
        p.add("name", name, f"{SAFE_NAME_RULE} (it names the sweep directory)")
    trust = boolean("trust_remote_code", raw.get("trust_remote_code", DEFAULT.trust_remote_code), p)
    models = _models(raw, p, bool(trust), suggested)
    data, task_metric = _data(raw, p)
    metric, data = _metric(raw, p, data, task_metric)
    importance = ImportanceSpec(**read_fields(ImportanceSpec, _importance_section(raw, p), "importance", p))
    if not importance.method:
        p.add("importance.method", [], "must name at least one importance method")
    ft_sec = section(raw, "finetune", p)
    train = TrainSpec(**read_fields(TrainSpec, ft_sec, "finetune", p, extra=("recovery_epochs",)))
    recovery = _recovery(ft_sec, p)
    strategies = _strategies(raw, p)
    ks = _ks(raw, p, strategies)
    per_layer = boolean("per_layer", raw.get("per_layer", DEFAULT.per_layer), p)
    seeds = _seeds(raw, p)
    sha = _single_head_arch(raw, p)
    _variant_clashes(models, sha, p)
    resources = _resources(raw, p)
    storage = string("storage", raw.get("storage", DEFAULT.storage), p)
    if storage and has_credentials(storage):
        p.add("storage", redact(storage), USE_ENVIRONMENT)
    elif storage and "://" in storage and storage.split("://", 1)[0] not in STORAGE_SCHEMES:
        p.add("storage", storage, UNSUPPORTED_SCHEME)  # static: reported with the other file problems
    max_failures = number("max_failures", raw.get("max_failures", DEFAULT.max_failures), p, integer=True, lo=0)
    tracking = _tracking(raw, p)
    random_draws = number("random_draws", raw.get("random_draws", DEFAULT.random_draws), p, integer=True, lo=1)
    iterative = IterativeSpec(**read_fields(IterativeSpec, section(raw, "iterative", p), "iterative", p))
    lsh = LayerSingleHeadSpec(**read_fields(LayerSingleHeadSpec, section(raw, "layer_single_head", p),
                                            "layer_single_head", p))
    if not lsh.keep:
        p.add("layer_single_head.keep", [], "must name at least one of ranked, best")
    measure_speed = boolean("measure_speed", raw.get("measure_speed", DEFAULT.measure_speed), p)
    save_pruned = boolean("save_pruned", raw.get("save_pruned", DEFAULT.save_pruned), p)
    analysis = AnalysisSpec(**read_fields(AnalysisSpec, section(raw, "analysis", p), "analysis", p))
    if p:
        return None
    return Sweep(name=name, models=models, data=data, importance=importance, train=train,
                 recovery_epochs=recovery, strategies=strategies, k=ks, per_layer=bool(per_layer),
                 seeds=seeds, single_head_arch=sha, resources=resources, storage=storage,
                 max_failures=max_failures, trust_remote_code=bool(trust), tracking=tracking,
                 metric=metric, random_draws=random_draws, iterative=iterative, layer_single_head=lsh,
                 measure_speed=bool(measure_speed), save_pruned=bool(save_pruned), analysis=analysis)

