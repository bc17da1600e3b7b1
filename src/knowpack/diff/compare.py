"""``knowpack diff``'s work: open both sides, pair their labels, and put the paired statistics, the benchmark
deltas and the figure deltas into one JSON-ready result that the gates read."""

from __future__ import annotations

import math
from typing import Any

from knowpack.diff.gates import ABSOLUTE, Gate
from knowpack.diff.paired import answer_flips, compare_labels
from knowpack.diff.sides import Side, before_figures, check_comparable, open_side
from knowpack.errors import InputError
from knowpack.evaluate.metrics import METRICS
from knowpack.kg.folder import read_questions

TEST = ("exact two-sided sign test over questions on the change of per-question accuracy (share of prompts "
        "answered right); unchanged questions left out; with one prompt per question it is McNemar's exact test")
BENCHMARK_STDERR = ("delta standard error sqrt(se_before² + se_after²): the harness's per-model errors, taken as "
                    "independent (conservative when both models answered the same items)")


def diff_folders(before_path, after_path, *, resamples: int, seed: int, confidence: float) -> dict[str, Any]:
    before, after = open_side(before_path), open_side(after_path)
    check_comparable(before, after)
    return diff_sides(before, after, resamples=resamples, seed=seed, confidence=confidence)


def diff_sides(before: Side, after: Side, *, resamples: int, seed: int, confidence: float) -> dict[str, Any]:
    before_labels, after_labels = before.labels.labels(), after.labels.labels()
    questions = read_questions(after.labels.questions_path, required=("id", "bucket", "relation")).select(
        ["id", "bucket", "relation"]).to_pandas()
    paired = compare_labels(before_labels, after_labels, questions, set(before.trained_ids | after.trained_ids),
                            resamples=resamples, seed=seed, confidence=confidence)
    if paired["n_paired"] == 0:
        raise InputError(f"{before.path} and {after.path} share no labelled question")
    figures_before, stderr_before = before_figures(before, after)
    figures_after, stderr_after = after.figures(), after.stderrs()
    benchmarks, figures = {}, {}
    for key in sorted(set(figures_before) & set(figures_after)):
        if key.endswith("_base") or key.startswith(("positive_shift", "negative_shift")) or key == "best_epoch":
            continue
        entry = {"before": figures_before[key], "after": figures_after[key],
                 "delta": figures_after[key] - figures_before[key]}
        if key in stderr_after:  # only benchmark scores carry a standard error
            a, b = stderr_after[key], stderr_before.get(key)
            entry.update(before_stderr=b, after_stderr=a,
                         stderr=math.sqrt(a**2 + b**2) if a is not None and b is not None else None)
            benchmarks[key] = entry
        else:
            figures[key] = entry
    return {
        "before": {"path": str(before.path), "kind": before.kind, "epoch": before.epoch},
        "after": {"path": str(after.path), "kind": after.kind, "epoch": after.epoch},
        "questions": {"before": len(before_labels), "after": len(after_labels), "paired": paired["n_paired"]},
        "settings": {"resamples": resamples, "seed": seed, "confidence": confidence, "test": TEST,
                     "benchmark_stderr": BENCHMARK_STDERR},
        "shift": paired["shift"],
        "transitions": paired["transitions"],
        "answers": answer_flips(before.labels.responses(), after.labels.responses()),
        "accuracy": paired["accuracy"],
        "benchmarks": benchmarks,
        "figures": figures,
        "after_figures": figures_after,
    }


def gate_values(result: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """Every value a gate may name: key → (value, what it means)."""
    shift_figures = METRICS["shift"].figures({"shift": result["shift"]})
    values = {f.key: (f.value, f"{f.label}: share of the paired questions whose category "
                      f"{'rose' if f.key.startswith('positive') else 'fell'} from BEFORE to AFTER")
              for f in shift_figures}
    values["accuracy"] = (result["accuracy"]["delta"], "mean per-question accuracy, AFTER − BEFORE")
    for key, entry in {**result["figures"], **result["benchmarks"]}.items():
        values[key] = (entry["delta"], "AFTER − BEFORE")
    for key, value in result["after_figures"].items():
        values[ABSOLUTE + key] = (value, "AFTER's own value")
    return values


def check_gates(result: dict[str, Any], gates: list[Gate]) -> list[dict[str, Any]]:
    """Each gate with the value it read and whether it is breached; a key without a value is a one-line error."""
    values = gate_values(result)
    checked = []
    for gate in gates:
        if gate.key not in values:
            known = ", ".join(sorted(k for k in values if not k.startswith(ABSOLUTE)))
            raise InputError(f"--fail-if {gate.text}: no figure {gate.key!r} for these two folders (gates can name "
                             f"{known}, or after.KEY)")
        value, meaning = values[gate.key]
        checked.append({"gate": gate.text, "key": gate.key, "value": value, "meaning": meaning,
                        "breached": gate.breached(value)})
    return checked
