"""A sweep directory is shared data, not code (issue 23): nothing in it runs, and nothing in it
writes Markdown or HTML of its own into the report."""
from __future__ import annotations

import re

from headsweep import analysis
from headsweep.analysis.synthetic import make_sweep_dir
from headsweep.trials import layout

EVIL = "evil<img src=x onerror=alert(1)>[link](javascript:alert(1))_*`"


def test_a_module_planted_in_the_analysis_folder_never_runs(tmp_path):
    """The notebook kernel used to run with SWEEP_DIR/analysis as its working directory, first on
    sys.path: a pandas.py placed there ran on `headsweep analyze`."""
    sweep = make_sweep_dir(tmp_path / "sweep", seed=2, models={"m": (2, 2)}, seeds=(0, 1, 2))
    marker = tmp_path / "planted-code-ran"
    planted = sweep / layout.ANALYSIS
    planted.mkdir(parents=True, exist_ok=True)
    for module in ("pandas", "numpy", "matplotlib"):
        (planted / f"{module}.py").write_text(f"open({str(marker)!r}, 'a').write('{module}')\n")
    paths = analysis.analyze(sweep, execute=True, timeout=300)
    assert not marker.exists(), marker.read_text()
    import nbformat
    nb = nbformat.read(paths["notebook"], as_version=4)
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")   # it did execute


def test_labels_cannot_inject_markdown_or_html_into_the_report(tmp_path):
    sweep = make_sweep_dir(tmp_path / "sweep", seed=3, models={EVIL: (2, 2), "plain": (2, 2)}, seeds=(0, 1, 2),
                           predictions=False, name="bad`name")
    from headsweep.analysis.report import md_escape
    report = analysis.analyze(sweep, execute=False)["report"].read_text()
    assert "plain" in report and md_escape(EVIL) in report
    assert "<img" not in report and "evil<" not in report
    shown = re.sub(r"<!-- id: [^>]*? -->", "", report)           # what renders: comments do not
    assert not re.search(r"(?<!\\)\[link(?<!\\)\]\(javascript", shown)      # no live link: [ and ] escaped
    assert "&lt;img src=x onerror=alert(1)&gt;\\[link\\](javascript:alert(1))\\_\\*" in report
    for cid in re.findall(r"<!-- id: (.*?) -->", report):
        assert ">" not in cid and "<" not in cid                 # no id can close its comment early
    title = report.splitlines()[0]
    assert title.count("`") == 2                                  # the code span around the name holds


def test_md_escape_leaves_ordinary_labels_alone():
    from headsweep.analysis.report import md_escape
    for label in ("tiny-gpt2", "gpt2", "bert.base", "distilbert-base-uncased", "m1"):
        assert md_escape(label) == label
    assert md_escape("a_b*c") == "a\\_b\\*c" and md_escape("x\ny") == "x y"
