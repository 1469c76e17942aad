"""Bad sweep files and bad data: ``headsweep validate`` refuses each with one line per problem.

The standard (docs/design.md "CLI"): bad input exits 2 with one clear line per problem,
``error: <key>: <problem> (got <value>)`` on stderr, naming the key and the value; nothing is
launched (Ray never starts) and nothing is written (no sweep directory). No traceback.

Every case writes its sweep file (and its tiny data files) under ``tmp_path``; the sweep's
``storage`` is ``tmp_path/"out"``, which must not exist afterwards.
"""
from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("offline_and_no_ray")

REPO = Path(__file__).resolve().parents[2]


def _sweep_text(tmp_path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path

# ---------------------------------------------------------------------------- tiny data files

GOOD_TRAIN = [("a fine film", 1), ("a dull film", 0), ("great acting", 1), ("weak plot", 0),
              ("loved it", 1), ("hated it", 0), ("superb", 1), ("boring", 0)]
GOOD_EVAL = [("nice", 1), ("awful", 0), ("brilliant", 1), ("tedious", 0)]


def write_tsv(path: Path, rows, header=("sentence", "label")) -> Path:
    lines = ["\t".join(header)] + ["\t".join("" if v is None else str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def data_dir(tmp_path, train=GOOD_TRAIN, eval_=GOOD_EVAL, header=("sentence", "label"),
             eval_header=None) -> Path:
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    if train is not None:
        write_tsv(d / "train.tsv", train, header)
    if eval_ is not None:
        write_tsv(d / "validation.tsv", eval_, eval_header or header)
    return d


def with_data(raw, source, **extra) -> dict:
    raw["data"] = {"source": str(source), "max_length": 32, **extra}
    raw["importance"] = {"examples": 2}
    return raw


def model_dir(tmp_path, kind: str) -> Path:
    """A local model directory holding only config.json (no weights are needed to validate)."""
    from transformers import GPT2Config, GPTNeoConfig, LlamaConfig, OPTConfig
    ids = dict(vocab_size=50, bos_token_id=0, eos_token_id=0, pad_token_id=0)  # in the vocabulary: no warnings
    cfg = {"gpt_neo": lambda: GPTNeoConfig(num_layers=2, num_heads=2, hidden_size=8,
                                           attention_types=[[["global"], 2]], **ids),
           "opt": lambda: OPTConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=8,
                                    ffn_dim=16, **ids),
           "gpt2": lambda: GPT2Config(n_layer=2, n_head=2, n_embd=8, **ids),
           # grouped-query attention: 4 query heads in 2 KV groups; multi-query: 1 KV head
           "llama": lambda: LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        hidden_size=16, intermediate_size=16, **ids),
           "llama-mqa": lambda: LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                                            hidden_size=16, intermediate_size=16, **ids)}[kind]()
    d = tmp_path / f"model-{kind}"
    cfg.save_pretrained(d)
    return d


# ---------------------------------------------------------------------------- the sweep file


def _set(path: str, value):
    """A mutation that sets a dotted key."""
    def mutate(raw, tmp_path):
        *parents, last = path.split(".")
        d = raw
        for p in parents:
            d = d.setdefault(p, {})
        d[last] = value
    return mutate


def _rename(old, new):
    def mutate(raw, tmp_path):
        d = raw
        *parents, last = old.split(".")
        for p in parents:
            d = d[p]
        d[new] = d.pop(last)
    return mutate


def _many(*mutations):
    def mutate(raw, tmp_path):
        for m in mutations:
            m(raw, tmp_path)
    return mutate


def _models(*models):
    return _set("models", list(models))


def _arch(kind):
    def mutate(raw, tmp_path):
        raw["models"] = [{"name": str(model_dir(tmp_path, kind)), "label": kind}]
    return mutate


def _storage_under_file(raw, tmp_path):
    (tmp_path / "afile").write_text("not a directory\n")
    raw["storage"] = str(tmp_path / "afile" / "sweeps")


def _delete(key):
    def mutate(raw, tmp_path):
        del raw[key]
    return mutate


def _no_config_dir(raw, tmp_path):
    (tmp_path / "empty-model").mkdir()
    raw["models"] = [{"name": str(tmp_path / "empty-model"), "label": "m"}]


# (id, mutation of SMALL, expected lines: substrings each line must contain)
SWEEP_CASES = [
    ("missing-models", _delete("models"), [("models:", "missing", "None")]),
    ("misspelt-modles", _rename("models", "modles"), [("modles:", "did you mean 'models'", "preset:tiny")]),
    ("misspelt-seed", _rename("seeds", "seed"), [("seed:", "did you mean 'seeds'", "[0, 1]")]),
    ("misspelt-stratgies", _rename("strategies", "stratgies"),
     [("stratgies:", "did you mean 'strategies'", "'top'")]),
    ("misspelt-finetune.learning_rate", _rename("finetune.lr", "learning_rate"),
     [("finetune.learning_rate:", "did you mean 'lr'", "0.001")]),
    ("misspelt-data.text_colum", _set("data.text_colum", "sentence"),
     [("data.text_colum:", "did you mean 'text_column'", "'sentence'")]),
    ("seeds-string", _set("seeds", "0"), [("seeds:", "integer", "'0'")]),
    ("k-string", _set("k", "half"), [("k:", "fraction", "'half'")]),
    ("epochs-string", _set("finetune.epochs", "three"), [("finetune.epochs:", "number", "'three'")]),
    ("per_layer-string", _set("per_layer", "yes"), [("per_layer:", "true or false", "'yes'")]),
    ("models-number", _set("models", 5), [("models:", "list", "5")]),
    ("models-mapping", _set("models", {"name": "gpt2"}), [("models:", "list", "{'name': 'gpt2'}")]),
    ("model-entry-number", _models(7), [("models[0]:", "name", "7")]),
    ("model-missing-name", _models({"label": "x"}), [("models[0].name:", "missing", "None")]),
    ("gpu-string", _set("resources.finetune.gpu", "one"), [("resources.finetune.gpu:", "number", "'one'")]),
    ("lr-negative", _set("finetune.lr", -1e-3), [("finetune.lr:", "> 0", "-0.001")]),
    ("epochs-zero", _set("finetune.epochs", 0), [("finetune.epochs:", "> 0", "got 0)")]),
    ("epochs-negative", _set("finetune.epochs", -2), [("finetune.epochs:", "> 0", "-2")]),
    ("batch_size-zero", _set("finetune.batch_size", 0), [("finetune.batch_size:", ">= 1", "got 0)")]),
    ("k-exceeds-heads", _set("k", [17]), [("k[0]:", "between 0 and 16", "4 layers x 4 heads", "got 17)")]),
    ("k-exceeds-heads-per-layer", _many(_set("k", [5]), _set("per_layer", True)),
     [("k[0]:", "between 0 and 4", "per layer", "got 5)")]),
    ("k-fraction-above-one", _set("k", [1.5]), [("k[0]:", "(0, 1)", "1.5")]),
    ("k-one-point-zero", _set("k", [1.0]), [("k[0]:", "integers", "1.0")]),
    ("k-negative", _set("k", [-2]), [("k[0]:", ">= 0", "-2")]),
    ("k-listed-twice", _set("k", [0.25, 0.25]), [("k[1]:", "twice", "0.25")]),
    ("unknown-strategy", _set("strategies", ["none", "topp"]),
     [("strategies[1]:", "did you mean 'top'", "single-head", "'topp'")]),
    ("unknown-architecture-gpt_neo", _arch("gpt_neo"),
     [("models[0].name:", "'gpt_neo' is not supported", "gpt2", "llama", "qwen2", "mistral",
       "units (importance.unit): head, kv_group", "model-gpt_neo")]),
    ("unknown-architecture-opt", _arch("opt"), [("models[0].name:", "'opt' is not supported", "model-opt")]),
    ("model-dir-without-config", _no_config_dir, [("models[0].name:", "config.json", "empty-model")]),
    ("model-dir-missing", _models({"name": "./no-such-model", "label": "m"}),
     [("models[0].name:", "no such model directory", "./no-such-model")]),
    ("unknown-preset", _models({"name": "preset:tiny-t5"}),
     [("models[0].name:", "unknown preset", "preset:tiny-gpt2", "preset:tiny-llama", "'preset:tiny-t5'")]),
    ("unknown-unit", _set("importance.unit", "group"), [("importance.unit:", "head, kv_group", "'group'")]),
    ("kv_group-on-multi-query-attention", _many(_arch("llama-mqa"), _set("importance.unit", "kv_group"),
                                                _set("single_head_arch", False)),
     [("importance.unit:", "llama-mqa: llama uses multi-query attention", "use importance.unit: head",
       "'kv_group'")]),
    ("one-head-variant-of-gqa", _arch("llama"),
     [("single_head_arch:", "llama (llama) has grouped-query attention", "'pretrained'")]),
    ("k-exceeds-kv-groups", _many(_arch("llama"), _set("importance.unit", "kv_group"), _set("single_head_arch", False),
                                  _set("k", [5])),
     [("k[0]:", "between 0 and 4", "llama (2 layers x 2 KV groups)", "got 5)")]),
    ("gguf-file-missing", lambda raw, t: raw.update(models=[{"name": str(t), "label": "g", "gguf_file": "no.gguf"}]),
     [("models[0].gguf_file:", "no such file in", "'no.gguf'")]),
    ("gguf-file-not-a-string", _models({"name": "preset:tiny-gpt2", "gguf_file": 3}),
     [("models[0].gguf_file:", "non-empty string", "got 3)")]),
    ("duplicate-seeds", _set("seeds", [0, 1, 0]), [("seeds[2]:", "duplicate", "got 0)")]),
    ("duplicate-model-labels", _models({"name": "preset:tiny-gpt2", "label": "tiny"},
                                       {"name": "preset:tiny-bert", "label": "tiny"}),
     [("models[1].label:", "duplicate", "models[0]", "'tiny'")]),
    ("mixed_precision", _set("finetune.mixed_precision", "fp8"),
     [("finetune.mixed_precision:", "bf16", "'fp8'")]),
    ("unknown-importance-method", _set("importance.method", "taylor"),
     [("importance.method:", "available: ablation, entropy, gradient", "'taylor'")]),
    ("unknown-importance-method-in-a-list", _set("importance.method", ["gradient", "ablaton"]),
     [("importance.method[1]:", "did you mean 'ablation'", "'ablaton'")]),
    ("unknown-metric", _set("metric", "acc"), [("metric:", "accuracy", "'acc'")]),
    ("unknown-strategy-iterativ", _set("strategies", ["none", "iterativ"]),
     [("strategies[1]:", "did you mean 'iterative'", "'iterativ'")]),
    ("iterative-step-one", _set("iterative", {"step": 1.0}), [("iterative.step:", "(0, 1)", "got 1.0)")]),
    ("iterative-step-zero", _set("iterative", {"step": 0}), [("iterative.step:", "(0, 1)", "got 0)")]),
    ("iterative-step-negative", _set("iterative", {"step": -0.1}), [("iterative.step:", "(0, 1)", "got -0.1)")]),
    ("importance.normalize-value", _set("importance.normalize", "l2"),
     [("importance.normalize:", "auto, none, layer_l2", "'l2'")]),
    ("importance.normalize-type", _set("importance.normalize", True),
     [("importance.normalize:", "string", "got True)")]),
    ("importance.normalize_per_layer-replaced", _set("importance.normalize_per_layer", False),
     [("importance.normalize_per_layer:", "replaced by importance.normalize", "auto | none | layer_l2",
       "got False)")]),
    ("importance-unknown-key", _set("importance.normalise", "none"),
     [("importance.normalise:", "did you mean 'normalize'", "'none'")]),
    ("unknown-strategy-each_head", _set("strategies", ["each_head"]),
     [("strategies[0]:", "did you mean 'each-head'", "'each_head'")]),
    ("layer_single_head-keep-value", _set("layer_single_head.keep", "oracle"),
     [("layer_single_head.keep:", "ranked, best", "'oracle'")]),
    ("layer_single_head-keep-in-a-list", _set("layer_single_head.keep", ["ranked", "bset"]),
     [("layer_single_head.keep[1]:", "ranked, best", "'bset'")]),
    ("layer_single_head-keep-twice", _set("layer_single_head.keep", ["best", "best"]),
     [("layer_single_head.keep[1]:", "twice", "'best'")]),
    ("layer_single_head-keep-empty", _set("layer_single_head.keep", []),
     [("layer_single_head.keep:", "at least one", "[]")]),
    ("layer_single_head-keep-type", _set("layer_single_head.keep", 2),
     [("layer_single_head.keep:", "list of names", "got 2)")]),
    ("layer_single_head-unknown-key", _set("layer_single_head.kep", "best"),
     [("layer_single_head.kep:", "did you mean 'keep'", "'best'")]),
    ("layer_single_head-not-a-mapping", _set("layer_single_head", "best"),
     [("layer_single_head:", "mapping", "'best'")]),
    ("random_draws-zero", _set("random_draws", 0), [("random_draws:", ">= 1", "got 0)")]),
    ("random_draws-fraction", _set("random_draws", 2.5), [("random_draws:", "integer", "got 2.5)")]),
    ("analysis-margin-zero", _set("analysis", {"margin": 0}), [("analysis.margin:", "(0, 1)", "got 0)")]),
    ("analysis-margin-one", _set("analysis", {"margin": 1}), [("analysis.margin:", "(0, 1)", "got 1)")]),
    ("analysis-margin-text", _set("analysis", {"margin": "1pt"}), [("analysis.margin:", "number", "'1pt'")]),
    ("analysis-misspelt-key", _set("analysis", {"margn": 0.02}), [("analysis.margn:", "did you mean 'margin'")]),
    ("analysis-not-a-mapping", _set("analysis", 0.01), [("analysis:", "mapping", "got 0.01)")]),
    ("single_head_arch-init", _set("single_head_arch", {"init": "zeros"}),
     [("single_head_arch.init:", "pretrained, random", "'zeros'")]),
    ("fractional-gpu-above-one", _set("resources.prune.gpu", 1.5),
     [("resources.prune.gpu:", "<= 1", "1.5")]),
    ("gpu-negative", _set("resources.finetune.gpu", -1), [("resources.finetune.gpu:", ">= 0", "-1")]),
    ("storage-under-a-file", _storage_under_file, [("storage:", "is a file", "afile/sweeps")]),
    ("storage-ftp", _set("storage", "ftp://x"), [("storage:", "scheme", "'ftp://x'")]),
    ("name-with-slash", _set("name", "a/b"), [("name:", "letters", "'a/b'")]),
    ("importance-examples-ge-synthetic-rows", _set("importance.examples", 240),
     [("importance.examples:", "240 rows", "got 240)")]),
    ("data-not-a-mapping", _set("data", "glue"), [("data:", "mapping", "'glue'")]),
    ("data-source-missing-file", _set("data.source", "./no-such-data.tsv"),
     [("data.source:", "no such file", "./no-such-data.tsv")]),
    # three planted problems -> three lines, one per problem
    ("three-problems", _many(_set("finetune.lr", -1.0), _set("seeds", [3, 3]), _set("strategies", ["topp"])),
     [("finetune.lr:", "-1.0"), ("strategies[0]:", "'topp'"), ("seeds[1]:", "duplicate", "got 3)")]),
    ("four-problems-with-storage", _many(_rename("models", "modles"), _set("finetune.epochs", 0),
                                         _set("per_layer", "no"), _set("storage", "ftp://x")),
     [("modles:", "did you mean"), ("finetune.epochs:", "got 0)"), ("per_layer:", "'no'"),
      ("storage:", "scheme", "'ftp://x'")]),
]


@pytest.mark.parametrize("mutate,expected", [c[1:] for c in SWEEP_CASES], ids=[c[0] for c in SWEEP_CASES])
def test_bad_sweep_file(harness, tmp_path, capsys, mutate, expected):
    raw = harness.base(tmp_path)
    mutate(raw, tmp_path)
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, raw)], capsys)
    harness.assert_refused(rc, out, err, expected, tmp_path=tmp_path)


# ---------------------------------------------------------------------------- the file itself

def _binary(tmp_path):
    p = tmp_path / "sweep.yaml"
    p.write_bytes(b"\xff\xfe\x00\x80garbage\x00")
    return p


FILE_CASES = [
    ("yaml-syntax-error", lambda t: _sweep_text(t, "name: x\nmodels:\n  - {name: gpt2\nseeds: [0]\n"),
     [("(sweep file):", "not valid YAML", "line 4, column", "sweep.yaml")]),
    ("yaml-bad-indent", lambda t: _sweep_text(t, "name: x\n  models: [a]\n"),
     [("(sweep file):", "not valid YAML", "line 2, column", "sweep.yaml")]),
    ("empty-file", lambda t: _sweep_text(t, ""), [("(sweep file):", "empty", "sweep.yaml")]),
    ("comments-only", lambda t: _sweep_text(t, "# nothing here\n"), [("(sweep file):", "empty", "sweep.yaml")]),
    ("yaml-list", lambda t: _sweep_text(t, "- name: x\n- models: []\n"), [("(sweep file):", "mapping", "list")]),
    ("yaml-scalar", lambda t: _sweep_text(t, "just a sentence\n"), [("(sweep file):", "mapping", "str")]),
    ("missing-path", lambda t: t / "nope.yaml", [("(sweep file):", "No such file", "nope.yaml")]),
    ("a-directory", lambda t: t, [("(sweep file):", "cannot read", str(Path("/")))]),
    ("binary-file", _binary, [("(sweep file):", "UTF-8", "sweep.yaml")]),
]


@pytest.mark.parametrize("make,expected", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_bad_sweep_file_itself(harness, tmp_path, capsys, make, expected):
    rc, out, err = harness.run_cli(["validate", make(tmp_path)], capsys)
    harness.assert_refused(rc, out, err, expected, tmp_path=tmp_path)


# ---------------------------------------------------------------------------- data files


def _bad_parquet(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.parquet").write_bytes(b"this is not parquet\x00\x01\x02" * 4)
    write_tsv(d / "validation.tsv", GOOD_EVAL)
    return d


def _empty_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "README.txt").write_text("nothing useful\n")
    return d


BAD_ROWS = GOOD_TRAIN[:3] + [("", 1), ("ok text", None)] + GOOD_TRAIN[3:]

DATA_CASES = [
    ("missing-text-column", lambda t: data_dir(t, header=("text", "label")), {},
     [("data.text_column:", "column missing", "'sentence'", "data.eval too")]),
    ("missing-label-column", lambda t: data_dir(t, header=("sentence", "y")), {},
     [("data.label_column:", "column missing", "'label'")]),
    ("non-numeric-labels", lambda t: data_dir(t, train=[("good", "pos"), ("bad", "neg")] * 4,
                                              eval_=[("fine", "pos"), ("poor", "neg")]), {},
     [("data.label_column:", "integers", "8 rows", "\"label='pos'\"")]),
    ("non-binary-labels", lambda t: data_dir(t, train=GOOD_TRAIN + [("meh", 2)]), {},
     [("data.label_column:", "0..1", "data.train", "label=[2]")]),
    ("empty-split", lambda t: data_dir(t, eval_=[]), {}, [("data.eval:", "empty", "'validation'")]),
    ("corrupt-parquet", _bad_parquet, {}, [("data.train:", "cannot read file", "train.parquet")]),
    ("dir-without-data-files", _empty_dir, {}, [("data.source:", "no .tsv", "data")]),
    ("dir-without-validation", lambda t: data_dir(t, eval_=None), {},
     [("data.eval:", "no validation.tsv", "'validation'")]),
    ("rows-with-empty-text-or-label", lambda t: data_dir(t, train=BAD_ROWS), {},
     [("data.train:", "2 rows", "of 10", "drop_invalid", "row 3: text=None, label=1")]),
    ("importance-examples-ge-rows", lambda t: data_dir(t), {"importance": {"examples": 8}},
     [("importance.examples:", "8 rows", "got 8)")]),
    ("two-data-problems", lambda t: data_dir(t, train=GOOD_TRAIN + [("meh", 5)], eval_=[]), {},
     [("data.label_column:", "label=[5]"), ("data.eval:", "empty")]),
    ("text-pair-column-missing", lambda t: data_dir(t), {"data": {"text_pair_column": "sentence2"}},
     [("data.text_pair_column:", "column missing", "data.eval too", "'sentence2'")]),
    ("single-file-eval-missing", lambda t: write_tsv(t / "all.tsv", GOOD_TRAIN), {},
     [("data.eval:", "file path", "'validation'")]),
]


@pytest.mark.parametrize("make,extra,expected", [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_bad_data(harness, tmp_path, capsys, make, extra, expected):
    raw = with_data(harness.base(tmp_path), make(tmp_path))
    for key, value in copy.deepcopy(extra).items():     # sections are merged into the file's
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, raw)], capsys)
    harness.assert_refused(rc, out, err, expected, tmp_path=tmp_path)


def test_bad_rows_validate_with_drop_invalid(harness, tmp_path, capsys):
    raw = with_data(harness.base(tmp_path), data_dir(tmp_path, train=BAD_ROWS), drop_invalid=True)
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, raw)], capsys)
    assert rc == 0, err
    assert "error:" not in err and out.startswith("ok: small:")
    assert not (tmp_path / "out").exists()


def test_good_local_data_validates(harness, small_counts, tmp_path, capsys):
    """The data cases above fail only for what they plant."""
    raw = with_data(harness.base(tmp_path), data_dir(tmp_path))
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, raw)], capsys)
    assert rc == 0, err
    a, b = small_counts
    assert f"{a} stage-A fine-tunes, {b} stage-B trials" in out


# ---------------------------------------------------------------------------- valid files


def test_demo_validates(harness, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # demo storage is ./sweeps: nothing may appear there
    rc, out, err = harness.run_cli(["validate", REPO / "configs" / "demo.yaml"], capsys)
    assert rc == 0, err
    assert "error:" not in err
    # 2 models + their one-head variants, 7 seeds; per (multi-head model, seed): top and bottom x 4 K,
    # random x 4 K x 3 draws, single-head, layer-single-head, iterative
    assert re.search(r"^ok: demo: 28 stage-A fine-tunes, 322 stage-B trials -> ", out, re.M), out
    assert not (tmp_path / "sweeps").exists()


def test_mnli_study_validates_offline(harness, tmp_path, capsys, monkeypatch):
    """configs/mnli.yaml runs each-head and layer_single_head keep [ranked, best]; its hub models
    are checked through their published shapes offline."""
    monkeypatch.chdir(tmp_path)
    rc, out, err = harness.run_cli(["validate", REPO / "configs" / "mnli.yaml"], capsys)
    assert rc == 0, err
    # 3 models x 5 seeds; per (model, seed): top and bottom x 9 K x 2 methods, random x 9 K x 5
    # draws, single-head x 2, layer-single-head ranked x 2 + best, iterative x 2, each-head
    per_seed = 2 * 9 * 2 + 9 * 5 + 2 + 3 + 2 + 1
    assert re.search(rf"^ok: mnli-heads: 15 stage-A fine-tunes, {15 * per_seed} stage-B trials -> ", out, re.M), out
    assert not (tmp_path / "sweeps").exists()


def test_small_validates(harness, small_counts, tmp_path, capsys):
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, harness.base(tmp_path))], capsys)
    assert rc == 0, err
    a, b = small_counts
    assert f"ok: small: {a} stage-A fine-tunes, {b} stage-B trials" in out
    assert not (tmp_path / "out").exists()


def test_one_model_by_name_validates(harness, tmp_path, capsys):
    """Decision: ``models: NAME`` (a string) is one model, as ``k: 0.5`` is one K."""
    raw = harness.base(tmp_path)
    raw["models"] = "preset:tiny-bert"
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, raw)], capsys)
    assert rc == 0, err
    assert out.startswith("ok: small:")


def test_supported_local_model_dir_validates(harness, tmp_path, capsys):
    """A local directory with only config.json of a supported architecture is enough to validate."""
    raw = harness.base(tmp_path)
    raw["models"] = [{"name": str(model_dir(tmp_path, "gpt2")), "label": "g"}]
    raw["k"] = [4]  # 2 layers x 2 heads: K = 4 is all of them, still allowed
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, raw)], capsys)
    assert rc == 0, err
    raw["k"] = [5]
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, raw)], capsys)
    harness.assert_refused(rc, out, err, [("k[0]:", "between 0 and 4", "g (2 layers x 2 heads)", "got 5)")],
                   tmp_path=tmp_path)


def test_a_gqa_model_counts_k_in_its_unit(harness, tmp_path, capsys):
    """With importance.unit kv_group, K counts KV groups: 0.5 of 2 layers x 2 groups is 2 groups."""
    raw = harness.base(tmp_path)
    raw.update(models=[{"name": str(model_dir(tmp_path, "llama")), "label": "l"}], single_head_arch=False,
               k=[0.5, 2], strategies=["none", "top"])
    raw["importance"]["unit"] = "kv_group"
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, raw)], capsys)
    assert rc == 0, err
    assert "ok: small: 2 stage-A fine-tunes, 2 stage-B trials" in out                # K 0.5 = K 2: run once
    assert "k: 2 removes 2 KV groups of l, like an earlier K; run once" in out + err
    raw["importance"]["unit"] = "head"                                                # 0.5 of 8 heads = 4
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, raw)], capsys)
    assert rc == 0 and "ok: small: 2 stage-A fine-tunes, 4 stage-B trials" in out, out + err


def test_a_gguf_model_validates_offline(harness, llama_gguf, tmp_path, capsys):
    """models[].gguf_file: the head layout comes from the GGUF file's metadata (2 layers x 4 query
    heads in 2 KV groups); a file that is not GGUF is one line."""
    _, path = llama_gguf
    raw = harness.base(tmp_path)
    raw.update(models=[{"name": str(path.parent), "label": "g", "gguf_file": path.name}], single_head_arch=False,
               k=[3], strategies=["none", "top"])
    raw["importance"]["unit"] = "kv_group"
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, raw)], capsys)
    assert rc == 0 and "ok: small: 2 stage-A fine-tunes, 2 stage-B trials" in out, err
    (path.parent / "not.gguf").write_text("plain text\n")
    raw["models"][0]["gguf_file"] = "not.gguf"
    rc, out, err = harness.run_cli(["validate", harness.write(tmp_path, raw)], capsys)
    harness.assert_refused(rc, out, err, [("models[0].gguf_file:", "cannot read the GGUF file", "'not.gguf'")],
                           tmp_path=tmp_path)


@pytest.mark.parametrize("config", ["llama.yaml", "llama-kv.yaml"])
def test_the_hub_llama_configs_validate_offline(harness, config, tmp_path, capsys, monkeypatch):
    """configs/llama*.yaml (SmolLM2-135M on SST-2, query heads and KV groups) validate with no network:
    the published architecture is known (checks.KNOWN_HUB_HEADS), the hub data set is left unchecked."""
    import yaml
    raw = yaml.safe_load((REPO / "configs" / config).read_text())
    assert raw["importance"]["unit"] == ("kv_group" if "kv" in config else "head")
    monkeypatch.chdir(tmp_path)
    rc, out, err = harness.run_cli(["validate", REPO / "configs" / config], capsys)
    assert rc == 0, err
    assert out.startswith(f"ok: {raw['name']}:") and not (tmp_path / "sweeps").exists()


# ---------------------------------------------------------------------------- through a real process


SUBPROCESS_CASES = {
    "not-yaml": [("(sweep file):", "not valid YAML", "line 2")],
    "negative-lr": [("finetune.lr:", "-0.5")],
    "bad-data": [("data.label_column:", "'label'")],
}


@pytest.fixture(scope="module")
def validate_processes(harness, tmp_path_factory):
    """``python -m headsweep validate`` on each case, all started at once (each pays the imports)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    procs = {}
    for case in SUBPROCESS_CASES:
        tmp = tmp_path_factory.mktemp(case)
        if case == "not-yaml":
            path = harness.write(tmp, "models: [\n")
        elif case == "negative-lr":
            raw = harness.base(tmp)
            raw["finetune"]["lr"] = -0.5
            path = harness.write(tmp, raw)
        else:
            path = harness.write(tmp, with_data(harness.base(tmp), data_dir(tmp, header=("sentence", "y"))))
        procs[case] = (tmp, subprocess.Popen([sys.executable, "-m", "headsweep", "validate", str(path)],
                                             cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             text=True))
    yield procs
    for _, proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("case", list(SUBPROCESS_CASES))
def test_subprocess_no_traceback(harness, validate_processes, case):
    tmp, proc = validate_processes[case]
    out, err = proc.communicate(timeout=180)
    harness.assert_refused(proc.returncode, out, err, SUBPROCESS_CASES[case], tmp_path=tmp)
    assert out == ""
