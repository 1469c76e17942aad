"""headsweep: attention-head importance and pruning sweeps.

One import name, three parts (docs/design.md):

- ``headsweep.orchestrator``: sweep file -> trial grid -> Ray Tune stages -> tables, the CLI
- ``headsweep.trials``: one trial (data, adapters, head gates, importance, strategies, train/eval)
- ``headsweep.analysis``: results tables -> statistics, figures, report, executed notebook

In the repository the parts are the top-level folders ``orchestrator/``, ``trials/`` and
``analysis/``; pyproject.toml maps them into this package (``[tool.setuptools.package-dir]``),
so a user's own ``trials/`` or ``analysis/`` folder can never shadow them.
"""
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("headsweep")
except _metadata.PackageNotFoundError:   # imported from a tree that was never installed
    __version__ = "0+unknown"
