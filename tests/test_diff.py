"""`knowpack diff`: paired flips, intervals, the sign test, benchmark deltas and the gates, on hand-made labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conftest import error_line, write_capital_questions
from knowpack import cli
from knowpack.config import ConfigError
from knowpack.diff.compare import check_gates, diff_sides
from knowpack.diff.gates import parse_gates
from knowpack.diff.paired import bootstrap_intervals, sign_test
from knowpack.diff.sides import Side, open_side
from knowpack.errors import InputError
from knowpack.probe.folder import LABELS_SCHEMA, RESPONSES_SCHEMA
from knowpack.runfolder import open_run, write_parquet

SETTINGS = {"model": "m", "n_prompts": 2, "shots": 4, "n_samples": 0, "exemplars": "pool"}
# greedy correctness under prompts 0 and 1 of questions capital/c0 … c5
BEFORE = [(1, 1), (1, 1), (1, 0), (0, 0), (0, 0), (1, 0)]  # HK HK MK UK UK MK
AFTER = [(1, 1), (0, 0), (0, 0), (1, 1), (1, 0), (1, 1)]  # HK UK UK HK MK HK


def label_folder(folder: Path, questions: Path, correct: list[tuple[int, int]], settings=SETTINGS) -> Path:
    """A complete label folder whose answers are right exactly where ``correct`` says."""
    run = open_run(folder, "label", settings, {"questions": questions}, extra_key={"model_fingerprint": "fp"})
    ids = [f"capital/c{i}" for i in range(len(correct))]
    responses = [{"question_id": q, "prompt_id": p, "sample_id": 0, "answer": "x", "correct_lenient": bool(c[p]),
                  "correct_strict": bool(c[p])} for q, c in zip(ids, correct) for p in (0, 1)]
    write_parquet(run.file("responses.parquet"), pa.Table.from_pylist(responses, schema=RESPONSES_SCHEMA))
    categories = ["HighlyKnown" if all(c) else "MaybeKnown" if any(c) else "Unknown" for c in correct]
    labels = {"question_id": ids, "p_greedy": [sum(c) / 2 for c in correct], "p_sample": [float("nan")] * len(ids),
              "p_greedy_strict": [sum(c) / 2 for c in correct], "p_sample_strict": [float("nan")] * len(ids),
              "category": categories, "category_strict": categories}
    write_parquet(run.file("labels.parquet"), pa.Table.from_pydict(labels, schema=LABELS_SCHEMA))
    run.finish(["responses.parquet", "labels.parquet"])
    return folder


@pytest.fixture
def folders(tmp_path):
    questions = write_capital_questions(tmp_path / "questions.parquet", 6)
    return label_folder(tmp_path / "before", questions, BEFORE), label_folder(tmp_path / "after", questions, AFTER)


def test_paired_flips_by_hand(folders):
    before, after = (open_side(f) for f in folders)
    result = diff_sides(before, after, resamples=500, seed=0, confidence=0.95)
    shift = result["shift"]["all/lenient"]
    # rose: c3 UK→HK, c4 UK→MK, c5 MK→HK; fell: c1 HK→UK, c2 MK→UK (of 6)
    assert (shift["n_positive"], shift["n_negative"], shift["n_questions"]) == (3, 2, 6)
    assert shift["positive"] == pytest.approx(3 / 6) and shift["negative"] == pytest.approx(2 / 6)
    assert shift["negative_ci"][0] <= 2 / 6 <= shift["negative_ci"][1]
    assert 0 <= shift["negative_ci"][0] and shift["negative_ci"][1] <= 1
    assert result["shift"]["not_trained/lenient"]["n_questions"] == 6  # label folders: nothing trained
    transitions = result["transitions"]
    assert transitions["HighlyKnown"]["Unknown"] == 1 and transitions["MaybeKnown"]["HighlyKnown"] == 1
    assert sum(sum(row.values()) for row in transitions.values()) == 6
    # accuracy per question: before 1, 1, .5, 0, 0, .5 (mean 0.5); after 1, 0, 0, 1, .5, 1 (mean 3.5 / 6)
    accuracy = result["accuracy"]
    assert accuracy["before"] == pytest.approx(0.5) and accuracy["after"] == pytest.approx(3.5 / 6)
    assert accuracy["delta"] == pytest.approx(1 / 12)
    assert accuracy["sign_test"] == {"better": 3, "worse": 2, "ties": 1, "p_value": 1.0}
    # answers: right→wrong c1 ×2, c2 prompt 0; wrong→right c3 ×2, c4 prompt 0, c5 prompt 1
    assert result["answers"] == {"n_answers": 12, "right_to_wrong": 3, "wrong_to_right": 4}
    assert result["benchmarks"] == {} and result["figures"] == {}


def test_sign_test_and_bootstrap_by_hand():
    # 1 better, 7 worse, 2 unchanged: p = 2 · P(X ≤ 1), X ~ Bin(8, 1/2) = 2 · 9/256
    assert sign_test(np.array([0.5] + [-1.0] * 7 + [0.0, 0.0])) == {"better": 1, "worse": 7, "ties": 2,
                                                                    "p_value": 18 / 256}
    assert sign_test(np.zeros(3))["p_value"] == 1.0
    assert bootstrap_intervals({"x": np.full(10, 0.25)}, 200, 0, 0.9) == {"x": (0.25, 0.25)}
    assert bootstrap_intervals({"x": np.array([])}, 200, 0, 0.9) == {"x": (None, None)}


class FakeEvaluation:
    """An evaluation whose summary holds what the per-epoch figures read: reliability and benchmarks."""

    summary_dict = {
        "shift_epochs": [1, 2], "best_epoch": 2,
        "reliability": {"trained": {"1": {"lenient": 0.8, "strict": 0.7}, "2": {"lenient": 1.0, "strict": 1.0}}},
        "benchmarks": {"settings": {}, "results": {"mmlu/acc": {
            "base": {"value": 0.30, "stderr": 0.04, "n": 100}, "epoch_01": {"value": 0.25, "stderr": 0.03, "n": 100},
            "epoch_02": {"value": 0.20, "stderr": 0.03, "n": 100}}}},
    }

    def summary(self):
        return self.summary_dict


def test_benchmark_deltas_and_gates(folders):
    before, labelled = (open_side(f) for f in folders)
    after = Side(Path("run"), "run", labelled.labels, epoch=1, evaluation=FakeEvaluation(), model_fingerprint="fp")
    result = diff_sides(before, after, resamples=200, seed=0, confidence=0.95)
    # BEFORE is a label folder of AFTER's base model: its scores are AFTER's base scores
    mmlu = result["benchmarks"]["mmlu"]
    assert (mmlu["before"], mmlu["after"]) == (0.30, 0.25) and mmlu["delta"] == pytest.approx(-0.05)
    assert mmlu["stderr"] == pytest.approx(0.05)  # sqrt(0.04² + 0.03²)
    result["gates"] = check_gates(result, parse_gates("mmlu<-0.01,negative_shift>0.4,after.reliability<0.9"))
    assert [(g["key"], g["breached"]) for g in result["gates"]] == [
        ("mmlu", True), ("negative_shift", False), ("after.reliability", True)]
    assert result["gates"][0]["meaning"] == "AFTER − BEFORE" and result["gates"][2]["value"] == 0.8
    with pytest.raises(InputError, match="no figure 'refusal_rate' for these two folders"):
        check_gates(result, parse_gates("refusal_rate>0"))


def test_diff_command_exit_codes_and_json(folders, tmp_path, capsys):
    before, after = map(str, folders)
    out = tmp_path / "diff.json"
    assert cli.main(["diff", before, after, "--json", str(out), "--resamples", "200"]) == 0
    assert json.loads(out.read_text())["shift"]["all/lenient"]["n_negative"] == 2
    assert "Knowledge shift" in capsys.readouterr().out
    assert cli.main(["diff", before, after, "--fail-if", "negative_shift>0.3"]) == 1  # 2/6 fell
    assert "gate breached: negative_shift>0.3" in capsys.readouterr().err
    assert cli.main(["diff", before, after, "--fail-if", "negative_shift>0.34, positive_shift<0.5"]) == 0
    assert "no figure 'mmlu'" in error_line(capsys, ["diff", before, after, "--fail-if", "mmlu<-0.01"])


def test_diff_input_errors(folders, tmp_path, capsys):
    before, after = folders
    other = label_folder(tmp_path / "other", write_capital_questions(tmp_path / "q.parquet", 6), AFTER,
                         {**SETTINGS, "n_prompts": 3})
    for args, message in [
        ([str(before), str(other)], "other probe settings (n_prompts)"),
        ([str(before), str(tmp_path / "nowhere")], "nowhere: folder not found"),
        ([str(before), str(tmp_path)], "no evaluation found"),
        ([str(before), str(after), "--fail-if", "negative_shift>>2"], "--fail-if: 'negative_shift>>2' is not a gate"),
        ([str(before), str(after), "--confidence", "1"], "--confidence: 1.0 must be below 1"),
    ]:
        error = error_line(capsys, ["diff", *args])
        assert message in error, (args, error)


def test_parse_gates():
    gates = parse_gates("negative_shift>0.02, mmlu<-0.01 ,after.reliability<=0.9,refusal_rate>=1e-2")
    assert [(g.key, g.op, g.threshold) for g in gates] == [
        ("negative_shift", ">", 0.02), ("mmlu", "<", -0.01), ("after.reliability", "<=", 0.9),
        ("refusal_rate", ">=", 0.01)]
    assert gates[0].breached(0.03) and not gates[0].breached(0.02)
    for bad in ("", "mmlu", "mmlu<", "mmlu=0.1", "after.<1", "negative_shift>0.02,"):
        with pytest.raises(ConfigError, match="is not a gate"):
            parse_gates(bad)
