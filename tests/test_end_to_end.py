"""The whole pipeline on the real embedded model (SmolLM2-135M-Instruct), at small size: questions from the
embedded fact graph → SliCK labels → a packing run → evaluation → report, through the same sweep code the demo
runs. Asserts the artifacts and their schemas, and that packing taught the model facts it did not know."""

from __future__ import annotations

import json
import textwrap

import pyarrow.parquet as pq
import pytest

from knowpack.kg.folder import QUESTIONS_SCHEMA
from knowpack.probe.folder import LABELS_SCHEMA, RESPONSES_SCHEMA
from knowpack.report.stage import ReportConfig
from knowpack.report.stage import run as make_report
from knowpack.sweep.driver import run_sweep
from knowpack.sweep.spec import load_sweep

SWEEP = """
name: e2e
model: smollm2-135m
data:
  make:
    questions: {source: embedded, per_bucket: 1}
    labels: {n_prompts: 2, n_samples: 0}
train: {batch_size: 8, allow_repeat: true}
evaluate: {heldout_paraphrases: 1, benchmarks: []}
grid:
  unknown: 8
  mixtures: [highly-known:1]
  rank: 8
  alpha: 16
  lr: 5.0e-3
  epochs: 3
  seed: 1
"""


@pytest.mark.slow
def test_demo_pipeline_on_the_embedded_model(tmp_path):
    sweep_file = tmp_path / "e2e.yaml"
    sweep_file.write_text(textwrap.dedent(SWEEP))
    out = run_sweep(load_sweep(sweep_file, out=tmp_path / "sweep")).path

    questions = pq.read_table(out / "data/questions/questions.parquet")
    assert questions.schema.names == QUESTIONS_SCHEMA.names and len(questions) > 50
    assert set(questions.column("bucket").to_pylist()) == {"head", "torso", "tail"}
    labels_dir = out / "data/labels"
    assert pq.read_table(labels_dir / "labels.parquet").schema.names == LABELS_SCHEMA.names
    responses = pq.read_table(labels_dir / "responses.parquet")
    assert responses.schema.names == RESPONSES_SCHEMA.names
    assert len(responses) == len(questions) * 2  # 2 prompts, greedy only

    (run,) = [p for p in (out / "runs").iterdir() if p.is_dir()]
    assert json.loads((run / "manifest.json").read_text())["complete"]
    assert len(json.loads((run / "manifest.json").read_text())["unknown_ids"]) == 8
    for epoch in (1, 2, 3):
        assert (run / f"epochs/epoch_{epoch:02d}/adapter_model.safetensors").is_file()
    reliability = pq.read_table(run / "eval/reliability.parquet").to_pandas()
    trained = reliability[reliability["scope"] == "trained"].set_index("epoch")["reliability_lenient"]
    assert trained.loc[0] == 0.0, "Unknown facts: the base model never answers them right"
    assert trained.loc[3] > trained.loc[0], "packing must teach the model some of the facts"
    shift = pq.read_table(run / "eval/shift.parquet").to_pandas()
    overall = shift[(shift["scope"] == "all") & (shift["breakdown"] == "overall") & (shift["match"] == "lenient")]
    assert overall["count"].sum() == len(questions)

    report = make_report(ReportConfig(source=out))
    assert report.html.is_file() and list(report.path.glob("*.png"))
