"""``headsweep plan``: what a sweep will run, before it runs.

Prints the grid per model and stage. (Peak concurrency and the wall-time / GPU-hour / cost
estimate from a throughput table are being added: issue 14.)
"""
from __future__ import annotations

from collections import Counter

from orchestrator.plan import Plan


def plan_report(pl: Plan) -> list[str]:
    a = Counter(s.model.label for s in pl.stage_a)
    b = Counter(s.finetune.model.label for s in pl.stage_b)
    lines = [f"plan: {pl.sweep.name} -> {pl.store.root}",
             f"  stage A: {len(pl.stage_a)} fine-tunes; stage B: {len(pl.stage_b)} trials"]
    for label in a:
        lines.append(f"  {label}: {a[label]} fine-tunes, {b.get(label, 0)} stage-B trials")
    return lines
