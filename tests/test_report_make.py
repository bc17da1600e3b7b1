"""The report on hand-built sweep folders (evaluate's own tables from synthetic answers) and on one run."""

import base64
import json
import re

import pytest
from PIL import Image

from knowpack.errors import InputError, RunConflictError
from knowpack.cli import main
from knowpack.evaluate.metrics import METRICS
from knowpack.evaluate.metrics.reliability import final_values
from knowpack.report.cells import by_size_and_mixture, cell, summary
from knowpack.report.collect import collect
from knowpack.report.stage import ReportConfig
from knowpack.report.stage import run as report


def make_report(config):
    return report(config).path

from report_fixtures import EPOCHS, write_run, write_sweep

MIXTURES = ["none", "highly-known:1", "paraphrase:2"]
FIGURES = {"reliability_per_epoch.png", "reliability_vs_facts.png", "shift_vs_facts.png", "shift_heatmaps.png",
           "shift_matrices.png", "refusals.png", "collapse.png", "spillover_reasons.png", "benchmarks.png"}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    write_sweep(folder, [1, 5, 20], MIXTURES, [1, 2], not_evaluated=1)
    return folder


def test_sweep_report_has_every_figure_table_and_summary(sweep_dir):
    out = make_report(ReportConfig(source=sweep_dir))
    assert out == sweep_dir / "report"
    assert FIGURES <= {p.name for p in out.glob("*.png")}
    for png in out.glob("*.png"):
        width, height = Image.open(png).size
        assert width > 300 and height > 200
    page = (out / "report.html").read_text()
    for heading in ("Figure 2", "Table 2", "Table 3", "Shift heatmaps", "Table 4", "Table 5", "Table 7"):
        assert heading in page
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == len(FIGURES), "every figure is inside the HTML: it opens from disk alone"
    assert base64.b64decode(embedded[0])[:4] == b"\x89PNG"
    assert "<script" not in page and "http" not in page.split("</style>")[1]
    markdown = (out / "report.md").read_text()
    assert "![Reliability per epoch (Figure 2)](reliability_per_epoch.png)" in markdown
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and "report.html" in manifest["outputs"]
    assert "17 evaluated runs of 18" in manifest["summary"]


def test_tables_aggregate_over_seeds_and_leave_out_unevaluated_runs(sweep_dir, tmp_path):
    data = collect(sweep_dir)
    assert len(data.runs) == 18 and len(data.evaluated) == 17
    reliability = data.frame("reliability")
    assert set(reliability["epoch"]) == set(range(EPOCHS + 1))
    assert set(reliability["scope"]) == {"trained", "heldout_paraphrase"}
    table = by_size_and_mixture(final_values(data), data.mixtures, lambda g: cell(g["reliability"]))
    assert list(table.columns) == ["facts", "no extra", "+1 HighlyKnown", "+2 paraphrases"]
    assert list(table["facts"]) == [1, 5, 20]
    assert re.fullmatch(r"\d\.\d\d( \[\d\.\d\d–\d\.\d\d\])?", table.iloc[0, 1])
    shifts = METRICS["shift"].sections(data, tmp_path)[0].tables[0][1]
    assert re.fullmatch(r"[+-]\d\.\d{3}.* / [+-]\d\.\d{3}.*", shifts.iloc[2, 1])
    assert set(data.frame("base_benchmarks")["score"]) == {"mmlu acc", "truthfulqa_mc1 acc"}
    assert data.frame("base_refusals")["refusal_rate"].mean() > 0.3, "the synthetic base model refuses its unknowns"


def test_summary_is_computed_from_the_numbers(sweep_dir):
    data = collect(sweep_dir)
    text = summary(data)
    worst = data.frame("shift").groupby(["unknown", "mixture"])["negative"].mean().max()
    assert f"{worst:.1%}" in text
    assert "1, 5 and 20 packed facts, 3 mixtures and 2 seeds" in text
    assert "mmlu acc" in text or "truthfulqa_mc1 acc" in text


def test_single_run_report_uses_bars(tmp_path):
    run = tmp_path / "run"
    write_run(run, 10, "paraphrase:1", 42)
    out = make_report(ReportConfig(source=run, out=tmp_path / "rep", title="demo"))
    assert {"reliability_per_epoch.png", "reliability_vs_facts.png", "benchmarks.png"} <= {p.name for p in out.glob("*.png")}
    page = (out / "report.html").read_text()
    assert "<title>demo</title>" in page and "1 evaluated run:" in page


def test_sweep_without_evaluated_runs_gets_a_report_that_says_so(tmp_path):
    write_sweep(tmp_path / "sweep", [1], ["none"], [1, 2], not_evaluated=2)
    out = make_report(ReportConfig(source=tmp_path / "sweep"))
    assert not list(out.glob("*.png"))
    page = (out / "report.html").read_text()
    assert "No run of this sweep has a complete evaluation yet (2 run(s) listed)" in page
    assert page.count("<td>trained</td>") == 2, "both runs are listed with their status"


def test_report_is_replaced_but_a_foreign_folder_is_refused(sweep_dir, tmp_path):
    first = make_report(ReportConfig(source=sweep_dir, out=tmp_path / "r"))
    (first / "stale.png").write_bytes(b"old")
    again = make_report(ReportConfig(source=sweep_dir, out=tmp_path / "r"))
    assert not (again / "stale.png").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(RunConflictError):
        make_report(ReportConfig(source=sweep_dir, out=tmp_path / "mine"))
    with pytest.raises(InputError, match="neither a sweep folder"):
        make_report(ReportConfig(source=tmp_path / "mine"))


def test_cli_report(sweep_dir, tmp_path, capsys):
    assert main(["report", str(sweep_dir), "--out", str(tmp_path / "cli"), "--title", "Grid"]) == 0
    assert str(tmp_path / "cli" / "report.html") in capsys.readouterr().out
    assert "<title>Grid</title>" in (tmp_path / "cli" / "report.html").read_text()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "folder not found" in capsys.readouterr().err
