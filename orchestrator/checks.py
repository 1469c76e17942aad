"""Checks that need the outside world: model configs, data files, storage, machine resources.

All run before anything is launched or written; each problem is one line (key and value).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from pyarrow.fs import FileType

from headsweep.orchestrator.storage import USE_ENVIRONMENT, has_credentials, open_store, redact, store_error
from headsweep.orchestrator.sweep import STORAGE_SCHEMES, UNSUPPORTED_SCHEME, Problems, Sweep
from headsweep.trials.errors import UserError
from headsweep.trials.schema import REMOVAL_STRATEGIES

# Used only when the hub cannot be reached (offline validation): published architectures.
KNOWN_HUB_HEADS = {
    # (type, layers, query heads, key/value heads (0: one per query head), position limit)
    "gpt2": ("gpt2", 12, 12, 0, 1024), "openai-community/gpt2": ("gpt2", 12, 12, 0, 1024),
    "gpt2-medium": ("gpt2", 24, 16, 0, 1024), "distilbert-base-uncased": ("distilbert", 6, 12, 0, 512),
    "distilbert/distilbert-base-uncased": ("distilbert", 6, 12, 0, 512),
    "bert-base-uncased": ("bert", 12, 12, 0, 512), "google-bert/bert-base-uncased": ("bert", 12, 12, 0, 512),
    "roberta-base": ("roberta", 12, 12, 0, 512), "FacebookAI/roberta-base": ("roberta", 12, 12, 0, 512),
    # grouped-query attention
    "HuggingFaceTB/SmolLM2-135M": ("llama", 30, 9, 3, 8192), "HuggingFaceTB/SmolLM2-360M": ("llama", 32, 15, 5, 8192),
    "Qwen/Qwen2.5-0.5B": ("qwen2", 24, 14, 2, 32768),
}
# Position embeddings offset by the padding index (RoBERTa's family): two fewer usable positions.
OFFSET_POSITIONS = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "longformer": 2}


@dataclass(frozen=True)
class Heads:
    model_type: str
    n_layers: int
    n_heads: int                 # query heads per layer
    n_kv_heads: int = 0          # key/value heads per layer (0: one per query head)
    unit: str = "head"           # importance.unit: what K counts
    max_positions: int | None = None   # the longest input the model takes (None: no known limit)

    @property
    def total(self) -> int:
        return self.n_layers * self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def n_units(self) -> int:
        """Units per layer that K counts: query heads, or KV groups (unit kv_group)."""
        return self.kv_heads if self.unit == "kv_group" else self.n_heads


_REACHABLE: dict[str, bool] = {}


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """One quick connection attempt (cached), so offline validation does not sit in retries."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    if host not in _REACHABLE:
        import socket
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            _REACHABLE[host] = True
        except OSError:
            _REACHABLE[host] = False
    return _REACHABLE[host]


def model_heads(name: str, trust_remote_code: bool = False, gguf_file: str | None = None) -> Heads:
    """Layer/head counts from a preset, a local directory, a GGUF file or the hub (config only, no
    weights)."""
    from headsweep.trials.presets import PRESET_PREFIX, preset_config
    if name.startswith(PRESET_PREFIX):
        cfg = preset_config(name)
    elif gguf_file:
        cfg = _gguf_config(name, gguf_file)
    else:
        from transformers import AutoConfig
        local = os.path.exists(os.path.expanduser(name))
        if not local and not hub_reachable() and name in KNOWN_HUB_HEADS:
            kind, layers, heads, kv, positions = KNOWN_HUB_HEADS[name]  # offline: the published architecture
            return Heads(kind, layers, heads, kv, max_positions=positions)
        if not local and name.startswith((".", "/", "~")):
            raise UserError("name", name, "no such model directory")
        if local and os.path.isdir(os.path.expanduser(name)) and not os.path.exists(
                os.path.join(os.path.expanduser(name), "config.json")):
            raise UserError("name", name, "no config.json in this model directory (save the model "
                                          "with save_pretrained)")
        try:
            kw = {} if local or hub_reachable() else {"local_files_only": True}
            cfg = AutoConfig.from_pretrained(os.path.expanduser(name), trust_remote_code=trust_remote_code, **kw)
        except Exception as e:  # hub/network/json errors all mean "cannot read this model"
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise UserError("name", name, f"cannot read the model config ({first})")
    # Unsupported architectures may lack these names: check_models reports the architecture.
    model_type = getattr(cfg, "model_type", None) or type(cfg).__name__
    return Heads(model_type, getattr(cfg, "num_hidden_layers", None) or 0,
                 getattr(cfg, "num_attention_heads", None) or 0, getattr(cfg, "num_key_value_heads", None) or 0,
                 max_positions=position_limit(cfg, model_type))


def position_limit(cfg, model_type: str) -> int | None:
    """The longest input (tokens) the model's position embeddings allow, from its config."""
    n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    if not isinstance(n, int) or n <= 0:
        return None
    return n - OFFSET_POSITIONS.get(model_type, 0)


def _gguf_config(name: str, gguf_file: str):
    """The config transformers reads from a GGUF file (a local one, or one in a hub repo)."""
    from transformers import AutoConfig
    from transformers.utils import is_gguf_available
    local = os.path.isdir(os.path.expanduser(name))
    if local and not os.path.isfile(os.path.join(os.path.expanduser(name), gguf_file)):
        raise UserError("gguf_file", gguf_file, f"no such file in {name}")
    if not is_gguf_available():
        raise UserError("gguf_file", gguf_file, "reading GGUF files needs the gguf package: "
                                                "pip install 'headsweep[gguf]'")
    if not local and not hub_reachable():
        raise UserError("gguf_file", gguf_file, f"{name} is neither a local directory nor reachable on the hub")
    try:
        return AutoConfig.from_pretrained(os.path.expanduser(name), gguf_file=gguf_file)
    except Exception as e:  # not a GGUF file, an architecture transformers cannot read from GGUF, ...
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError("gguf_file", gguf_file, f"cannot read the GGUF file ({first})")


def check_models(sweep: Sweep, p: Problems) -> dict[str, Heads]:
    """Architecture supported and every K within each model's head count."""
    from headsweep.trials.adapters import ADAPTERS
    from headsweep.trials.spec import UNITS
    from headsweep.trials.strategies import resolve_k
    from headsweep.trials.units import unit_problem
    heads = {}
    unit = sweep.importance.unit
    for i, m in enumerate(sweep.models):
        try:
            h = dataclasses.replace(model_heads(m.name, m.trust_remote_code, m.gguf_file), unit=unit)
        except UserError as e:
            key = f"models[{i}].gguf_file" if e.key == "gguf_file" else f"models[{i}].name"
            p.add(key, m.gguf_file if e.key == "gguf_file" else m.name, e.problem)
            continue
        if h.model_type not in ADAPTERS:
            p.add(f"models[{i}].name", m.name, f"architecture '{h.model_type}' is not supported; supported "
                                               f"model types: {', '.join(sorted(ADAPTERS))}; units "
                                               f"(importance.unit): {', '.join(UNITS)}")
            continue
        problem = unit_problem(unit, h.kv_heads, h.n_heads, h.model_type)
        if problem:
            p.add("importance.unit", unit, f"{m.label}: {problem}")
            continue
        if sweep.single_head_arch and not ADAPTERS[h.model_type].one_head_variant:
            p.add("single_head_arch", sweep.single_head_arch, f"{m.label} ({h.model_type}) has grouped-query "
                  "attention: its key/value projections cannot merge into one head; drop single_head_arch "
                  "or this model")
            continue
        if m.tokenizer and m.tokenizer.startswith((".", "/", "~")) and not os.path.isdir(
                os.path.expanduser(m.tokenizer)):
            p.add(f"models[{i}].tokenizer", m.tokenizer, "no such tokenizer directory")
        heads[m.label] = h
        if h.max_positions is not None and sweep.data.max_length > h.max_positions:
            p.add("data.max_length", sweep.data.max_length,
                  f"longer than {m.label} takes ({h.max_positions} positions); every evaluation would fail "
                  f"after the fine-tune: use at most {h.max_positions}")
        if any(s in sweep.strategies for s in REMOVAL_STRATEGIES):
            for j, k in enumerate(sweep.k):
                if not k:
                    continue
                try:
                    resolve_k(k, h.n_layers, h.n_units, sweep.per_layer)
                except UserError as e:
                    what = "KV groups" if unit == "kv_group" else "heads"
                    p.add(f"k[{j}]", k, f"{e.problem} for {m.label} ({h.n_layers} layers x {h.n_units} {what})")
    return heads


def check_importance(sweep: Sweep, p: Problems) -> None:
    """Every importance method is a registered one (importing the registry imports torch, so
    this runs with the checks, not the sweep-file parser)."""
    from headsweep.trials.importance import IMPORTANCE_METHODS
    methods = sweep.importance.method
    for i, m in enumerate(methods):
        if m not in IMPORTANCE_METHODS:
            e = IMPORTANCE_METHODS.error(m, f"importance.method[{i}]" if len(methods) > 1 else "importance.method")
            p.add(e.key, e.value, e.problem)


def check_data(sweep: Sweep, p: Problems) -> None:
    """Local and synthetic data are read and checked in full; hub data is checked when reachable.

    Both splits are checked, so a problem in each is reported; the same problem in both (a
    column name that neither file has) is one line.
    """
    from headsweep.trials.data import SYNTHETIC_SOURCES, is_local_source, read_split
    d = sweep.data
    if d.source not in SYNTHETIC_SOURCES and not is_local_source(d.source):
        return _check_hub_data(d, p)
    rows, found = {}, []
    splits = [("train", None), ("eval", None)] + [("extra_eval", s) for s in d.extra_eval]
    for which, split in splits:
        try:
            rows[which] = len(read_split(d, which, split))
        except UserError as e:
            if e.key == "data.source":  # the same for both splits
                p.add(e.key, e.value, e.problem)
                return
            same = [f for f in found if (f.key, repr(f.value)) == (e.key, repr(e.value))]
            if same:
                same[0].problem += f" (data.{which} too)"
            else:
                found.append(e)
        except Exception as e:  # a reader failing in a way data.py did not foresee: still one line
            msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
            found.append(UserError(f"data.{which}", split or (d.train if which == "train" else d.eval),
                                   f"cannot read this split ({type(e).__name__}: {msg})"))
    for e in found:
        p.add(e.key, e.value, e.problem)
    n_train = rows.get("train")
    if n_train is not None and sweep.importance.examples >= n_train:
        p.add("importance.examples", sweep.importance.examples,
              f"must be smaller than the training split ({n_train} rows); importance examples are "
              "held out of it")


def _check_hub_data(d, p: Problems) -> None:
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or not hub_reachable():
        p.warn("data.source", d.source, "hub dataset not checked (the hub is unreachable from here)")
        return
    try:
        from huggingface_hub import HfApi
        from headsweep.trials.data import HUB_ALIASES
        repo = d.source.removeprefix("hub:").split(":")[0]
        for alias, target in HUB_ALIASES.items():
            if repo.startswith(alias):
                repo = target[0]
        HfApi().dataset_info(repo, timeout=10)
    except Exception as e:  # offline machines cannot tell "missing" from "unreachable"
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        if "404" in msg or "not found" in msg.lower():
            p.add("data.source", d.source, f"no such hub dataset ({msg})")
        else:
            p.warn("data.source", d.source, f"hub dataset not checked ({msg})")


def check_storage(storage: str, p: Problems, key: str = "storage") -> None:
    """A local storage path must be (creatable and) writable; an object store needs its scheme, no
    credentials in the URI, and (where reachable) a bucket these credentials can list."""
    if "://" in storage and not storage.startswith("file://"):
        scheme = storage.split("://", 1)[0]
        if has_credentials(storage):
            p.add(key, redact(storage), USE_ENVIRONMENT)
        elif scheme not in STORAGE_SCHEMES:
            p.add(key, storage, UNSUPPORTED_SCHEME)
        else:
            probe_object_store(storage, p, key)
        return
    storage = storage.removeprefix("file://")
    path = Path(os.path.expanduser(storage)).absolute()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        p.add(key, storage, f"{probe} is a file, not a directory")
    elif not os.access(probe, os.W_OK | os.X_OK):
        p.add(key, storage, f"cannot write to {probe}")


def probe_object_store(storage: str, p: Problems, key: str) -> None:
    """Open the store and list the storage prefix: an error (no region offline, no such bucket,
    access denied) is one line; an unreachable endpoint with a known region only a warning (a
    cluster may reach what this machine cannot)."""
    try:
        store = open_store(storage, key=key)
    except UserError as e:
        p.add(e.key, e.value, e.problem)
        return
    try:
        bucket = store.path().split("/", 1)[0]
        if store.fs.get_file_info(bucket).type == FileType.NotFound:
            p.add(key, redact(storage), f"cannot use this bucket (no bucket named {bucket!r})")
            return
        store.fs.get_file_info(store.path())
    except (OSError, ValueError) as e:
        text = store_error(e)
        if "NETWORK_CONNECTION" in text or "Could not resolve" in text or "timed out" in text.lower():
            p.warn(key, redact(storage), f"not checked: the store is unreachable from here ({text[:120]})")
        else:
            p.add(key, redact(storage), f"cannot use this bucket ({text})")


def check_resources(sweep: Sweep, p: Problems, *, cpus: float, gpus: float, cluster: bool) -> None:
    """Local mode: refuse trials no node can hold (Ray would wait forever). Cluster: warn only."""
    for stage, r in sweep.resources.items():
        for kind, need, have in (("cpu", r.cpu, cpus), ("gpu", r.gpu, gpus)):
            if need <= have:
                continue
            what = (f"{need:g} {kind.upper()} per trial requested but this machine has {have:g}"
                    + ("; use --gpus N if GPUs are hidden, or set it to 0" if kind == "gpu" else ""))
            if cluster:
                p.warn(f"resources.{stage}.{kind}", need, what + " (relying on the autoscaler)")
            else:
                p.add(f"resources.{stage}.{kind}", need, what)


def local_capacity(cpus: float | None, gpus: float | None) -> tuple[float, float]:
    """CPUs and GPUs this machine gives Ray in local mode (CLI overrides win)."""
    if cpus is None:
        cpus = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    if gpus is None:
        try:
            import torch
            gpus = float(torch.cuda.device_count())
        except Exception:
            gpus = 0.0
    return cpus, gpus
