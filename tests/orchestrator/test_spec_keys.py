"""spec.yaml records analysis.margin; a sweep directory written before the key existed is still the
same sweep (its spec holds the default), and a different margin is a different sweep."""
from types import SimpleNamespace

import pytest
import yaml

from headsweep.orchestrator.plan import Refused
from headsweep.orchestrator.readers import Problems
from headsweep.orchestrator.storage import Store
from headsweep.orchestrator.sweep import parse
from headsweep.orchestrator.sweepdir import claim_directory
from headsweep.trials import layout


def _sweep(**extra):
    p = Problems()
    s = parse({"name": "s", "models": ["preset:tiny-gpt2"], "data": {"source": "synthetic"}, **extra}, p)
    assert not p.lines, p.lines
    return s


def test_margin_is_recorded_and_old_specs_still_match(tmp_path):
    sweep = _sweep(analysis={"margin": 0.02})
    assert sweep.to_yaml_dict()["analysis"] == {"margin": 0.02}
    assert _sweep().to_yaml_dict()["analysis"] == {"margin": 0.01}
    store = Store(str(tmp_path))
    old = _sweep().to_yaml_dict()
    del old["analysis"]                               # written before the key existed
    store.write_bytes(layout.SPEC, yaml.safe_dump(old, sort_keys=False).encode())
    pl = SimpleNamespace(store=store, sweep=_sweep(), stage_a=[], stage_b=[])
    claim_directory(pl)                               # the same sweep: claimed, spec rewritten in full
    assert yaml.safe_load(store.read_bytes(layout.SPEC))["analysis"] == {"margin": 0.01}
    with pytest.raises(Refused, match="already holds a different sweep"):
        claim_directory(SimpleNamespace(store=store, sweep=sweep, stage_a=[], stage_b=[]))
