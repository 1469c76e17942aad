"""Known tasks: what ``data.source: glue/<task>`` (or ``synthetic-pairs``) implies for the columns,
labels, evaluation splits and primary metric, so a sweep file need not spell them out.

The sweep-file parser fills in every key the file leaves out from this table (what the file sets
wins), so the resolved spec.yaml and the trial specs say exactly what ran. GLUE's column names and
splits are those of the hub's ``nyu-mll/glue`` configs.

Primary metrics: GLUE reports MCC for CoLA, Pearson/Spearman for STS-B, F1 *of the positive class*
and accuracy for MRPC/QQP, accuracy elsewhere. headsweep's ``f1`` column is the macro F1, not
GLUE's positive-class F1, so MRPC and QQP use accuracy as primary (every metric is in the row).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

from headsweep.trials.errors import UserError

GLUE_PREFIXES = ("glue/", "nyu-mll/glue:", "hub:glue/")
SYNTHETIC_PAIRS = "synthetic-pairs"


@dataclass(frozen=True)
class Task:
    text_column: str
    text_pair_column: str | None
    num_labels: int
    metric: str
    eval: str = "validation"
    extra_eval: tuple[str, ...] = ()
    label_column: str = "label"
    train: str = "train"

    def data_defaults(self) -> dict:
        """DataSpec keyword arguments this task implies."""
        return {"text_column": self.text_column, "text_pair_column": self.text_pair_column,
                "num_labels": self.num_labels, "eval": self.eval, "extra_eval": self.extra_eval,
                "label_column": self.label_column, "train": self.train}


GLUE = {
    "cola": Task("sentence", None, 2, "mcc"),
    "sst2": Task("sentence", None, 2, "accuracy"),
    "mrpc": Task("sentence1", "sentence2", 2, "accuracy"),
    "qqp": Task("question1", "question2", 2, "accuracy"),
    "stsb": Task("sentence1", "sentence2", 1, "pearson"),
    "mnli": Task("premise", "hypothesis", 3, "accuracy", eval="validation_matched",
                 extra_eval=("validation_mismatched",)),
    "qnli": Task("question", "sentence", 2, "accuracy"),
    "rte": Task("sentence1", "sentence2", 2, "accuracy"),
    "wnli": Task("sentence1", "sentence2", 2, "accuracy"),
}
# The generated sentence-pair task (trials/synthetic_pairs.py): offline, for tests and demos.
SYNTHETIC_PAIR_TASK = Task("sentence1", "sentence2", 2, "accuracy")


def glue_task_name(source: str) -> str | None:
    """``glue/mnli`` -> ``mnli``; None for sources that are not GLUE."""
    for prefix in GLUE_PREFIXES:
        if source.startswith(prefix):
            return source[len(prefix):]
    return None


def task_for(source: str) -> Task | None:
    """The task a data source implies, or None (a local file, another hub dataset, synthetic).
    An unknown GLUE task is a ``UserError`` naming the available ones."""
    if source == SYNTHETIC_PAIRS:
        return SYNTHETIC_PAIR_TASK
    name = glue_task_name(source)
    if name is None:
        return None
    if name not in GLUE:
        close = difflib.get_close_matches(name, list(GLUE), n=1)
        hint = f"; did you mean 'glue/{close[0]}'?" if close else ""
        raise UserError("data.source", source, f"unknown GLUE task; available: "
                                               f"{', '.join('glue/' + t for t in GLUE)}{hint}")
    return GLUE[name]
