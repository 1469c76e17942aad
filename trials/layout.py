"""The sweep directory: every file and folder name a sweep writes, in one place (docs/design.md).

Paths here are relative POSIX strings: join them to a local directory (``Path(root) / RESULTS``)
or hand them to ``orchestrator.storage.Store`` (which also serves s3:// and gs://). Nothing else
in the code base spells these names; ``tests/test_contracts.py`` checks that.

    SWEEP_DIR/spec.yaml                          the resolved sweep
    SWEEP_DIR/grid.json                          every trial of both stages
    SWEEP_DIR/lease.json                         the running driver's lease (run id, host, pid, heartbeat); gone when it ends
    SWEEP_DIR/drift.json                         inputs that changed between runs, accepted with --allow-drift
    SWEEP_DIR/quarantine/                        damaged files moved aside (the trial runs again)
    SWEEP_DIR/results.parquet, results.csv       one row per evaluated trial
    SWEEP_DIR/importance.parquet                 model, seed, method, layer, head, score, score_raw
    SWEEP_DIR/predictions/<row_key>.parquet      per-example predictions of one results row
    SWEEP_DIR/checkpoints/<stage-A key>/         stage-A model (HF format, safetensors)
    SWEEP_DIR/pruned/<trial_key>/                a pruned model (save_pruned)
    SWEEP_DIR/trials/<trial_key>/                result.json ({"rows": [...]}), status.json, error.json[, importance.parquet]
    SWEEP_DIR/analysis/                          analysis.ipynb, report.md, stats.csv, summary.csv, prunable.csv,
                                                 per_head.csv, importance_vs_damage.csv, figures/
    SWEEP_DIR/ray/<run_id>/<stage>/              Ray Tune's experiment folders, one set per driver run
    SWEEP_DIR/logs/<run_id>/                     the driver's log and Ray's session logs of that run
"""
from __future__ import annotations

# ---------------------------------------------------------------------------- the sweep's top level
SPEC = "spec.yaml"
GRID = "grid.json"
LEASE = "lease.json"          # the driver's lease (orchestrator/lease.py); replaces driver.json
DRIFT = "drift.json"          # changed inputs accepted with --allow-drift (orchestrator/provenance.py)
QUARANTINE = "quarantine"     # damaged files, moved aside with a warning (orchestrator/quarantine.py)
RESULTS = "results.parquet"
RESULTS_CSV = "results.csv"
IMPORTANCE = "importance.parquet"
PREDICTIONS = "predictions"
CHECKPOINTS = "checkpoints"
TRIALS = "trials"
RAY = "ray"
LOGS = "logs"
MLRUNS = "mlruns"             # MLflow's file store (tracking: {mlflow: true})
FAULTS = ".faults"            # fault-injection markers (tests only)

# ---------------------------------------------------------------------------- one trial's files
# The same names inside ``trials/<key>/`` and in the private output directory of ``trials.run``.
RESULT = "result.json"        # written last: its presence means the trial is complete
STATUS = "status.json"
ERROR = "error.json"
TRIAL_IMPORTANCE = "importance.parquet"
CHECKPOINT = "checkpoint"     # stage A's model, inside the trial's output directory
CKPT_IMPORTANCE = "importance.parquet"   # beside the weights: what stage B ranks heads by
CKPT_SPEC = "headsweep_spec.json"
CKPT_TRAIN = "headsweep_train.json"   # fine-tuning statistics beside weights saved before evaluation
FINETUNED = "finetuned"       # stage A's fine-tuned weights, before evaluation, in the output directory
PRUNED_MODEL = "pruned_model"   # save_pruned: a stage-B trial's physically pruned model (HF format)
PRUNED = "pruned"               # SWEEP_DIR/pruned/<trial_key>/

# ---------------------------------------------------------------------------- the analysis
ANALYSIS = "analysis"
NOTEBOOK = f"{ANALYSIS}/analysis.ipynb"
REPORT = f"{ANALYSIS}/report.md"
STATS = f"{ANALYSIS}/stats.csv"
SUMMARY = f"{ANALYSIS}/summary.csv"
MCNEMAR_BY_SEED = f"{ANALYSIS}/mcnemar_by_seed.csv"
PRUNABLE = f"{ANALYSIS}/prunable.csv"                    # how many heads can go (non-inferiority)
PER_HEAD = f"{ANALYSIS}/per_head.csv"                    # each head removed alone (strategy each-head)
IMPORTANCE_VS_DAMAGE = f"{ANALYSIS}/importance_vs_damage.csv"
FIGURES = f"{ANALYSIS}/figures"
FIGURE_FORMATS = ("png", "pdf")

# Every top-level entry an object-store sweep copies down for analysis (all but checkpoints).
ANALYSIS_INPUTS = (SPEC, GRID, RESULTS, RESULTS_CSV, IMPORTANCE, PREDICTIONS)


def trial_dir(key: str) -> str:
    return f"{TRIALS}/{key}"


def trial_file(key: str, name: str) -> str:
    """``trials/<key>/<name>``; ``name`` is one of RESULT, STATUS, ERROR, TRIAL_IMPORTANCE."""
    return f"{TRIALS}/{key}/{name}"


def result_file(key: str) -> str:
    return trial_file(key, RESULT)


def status_file(key: str) -> str:
    return trial_file(key, STATUS)


def error_file(key: str) -> str:
    return trial_file(key, ERROR)


def predictions_file(row_key: str) -> str:
    """``predictions/<row_key>.parquet``: the same relative path in the sweep directory and in a
    trial's private output directory (``trials.run``)."""
    return f"{PREDICTIONS}/{row_key}.parquet"


def pruned_model_dir(key: str) -> str:
    return f"{PRUNED}/{key}"


def checkpoint_dir(key: str) -> str:
    """``checkpoints/<stage-A key>``: named by content (the fine-tune's trial key), so two model
    variants can never share a folder whatever their labels."""
    return f"{CHECKPOINTS}/{key}"


def finetuned_dir(key: str) -> str:
    """``trials/<stage-A key>/finetuned``: the fine-tuned weights, saved before evaluation and
    importance, so a retry of the trial starts from them instead of fine-tuning again."""
    return f"{TRIALS}/{key}/{FINETUNED}"


def quarantined(rel: str, stamp: str) -> str:
    """``quarantine/<rel with / as __>.<stamp>``: where a damaged file is moved."""
    return f"{QUARANTINE}/{rel.replace('/', '__')}.{stamp}"


def ray_run(run_id: str) -> str:
    """``ray/<run_id>``: the Ray Tune experiments of one driver run (one folder per stage)."""
    return f"{RAY}/{run_id}"


def stage_over_marker(run_id: str, stage: str = "stage_a") -> str:
    """Written by the driver when a stage's Tuner has returned (stage B may then finish)."""
    return f"{RAY}/{run_id}/{stage}.over"


def run_logs(run_id: str) -> str:
    """``logs/<run_id>``: the driver's log and a copy of Ray's session logs of one run."""
    return f"{LOGS}/{run_id}"


DRIVER_LOG = "driver.log"


def figure_file(stem: str, fmt: str = "png") -> str:
    return f"{FIGURES}/{stem}.{fmt}"


def fault_marker(key: str, mode: str) -> str:
    return f"{FAULTS}/{key}.{mode}"
