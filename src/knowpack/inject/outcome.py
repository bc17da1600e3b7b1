"""What an injection did: the figures of every epoch, the epoch chosen, the damage at that epoch on the guard set,
each fact's fate; then the export, the report and ``inject.json`` (the folder's last writes).

The guard figures use the shift metric's definitions on the guard questions only (``diff.paired``): the packed
facts, whose rise is the point of the adapter, and the known facts left out are not part of them.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from knowpack import __version__
from knowpack.diff.paired import compare_labels
from knowpack.evaluate.folder import epoch_dir
from knowpack.evaluate.metrics.collapse import collapse_stats
from knowpack.evaluate.metrics.refusals import RefusalDetector, refusal_rates
from knowpack.evaluate.metrics.shift import paired_categories, shift_fractions
from knowpack.inject import folder as layout
from knowpack.runfolder import write_json


def guard_shift(before: pd.DataFrame, after: pd.DataFrame, guard: pd.DataFrame) -> dict[str, float]:
    """Positive and negative shift (lenient) over the guard questions."""
    ids = set(guard["id"])
    pairs = paired_categories(before[before["question_id"].isin(ids)], after[after["question_id"].isin(ids)], guard,
                              set(), "lenient")
    row = shift_fractions(pairs).query("scope == 'all' and breakdown == 'overall'").iloc[0]
    return {"negative": float(row.negative), "positive": float(row.positive), "n_questions": int(row.n_questions)}


def epoch_rows(summary: dict[str, Any], base_labels: pd.DataFrame, after_labels: dict[int, pd.DataFrame],
               guard: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per epoch (0 = the base model): reliability on the facts and held-out paraphrases, the guard
    shift, and each benchmark's score and drop below the base model's."""
    reliability = summary["reliability"]
    results = summary["benchmarks"]["results"]
    rows = []
    for epoch in [0, *sorted(after_labels)]:
        row: dict[str, Any] = {"epoch": epoch,
                               "reliability": reliability["trained"][str(epoch)]["lenient"],
                               "heldout_reliability": reliability.get("heldout_paraphrase", {}).get(
                                   str(epoch), {}).get("lenient")}
        if epoch:
            shift = guard_shift(base_labels, after_labels[epoch], guard)
            row.update(guard_negative_shift=shift["negative"], guard_positive_shift=shift["positive"])
        else:
            row.update(guard_negative_shift=0.0, guard_positive_shift=0.0)
        model = "base" if epoch == 0 else epoch_dir(epoch)
        row["benchmarks"] = {name: {"value": r[model]["value"], "stderr": r[model]["stderr"],
                                    "drop": r["base"]["value"] - r[model]["value"]}
                             for name, r in results.items() if model in r and "base" in r}
        rows.append(row)
    return rows


def choose_epoch(rows: list[dict[str, Any]], max_negative_shift: float | None,
                 max_benchmark_drop: float | None) -> dict[str, Any]:
    """The trained epoch with the best reliability among those within the damage limits (the earliest on ties);
    when none is within them, the least damaging one (lowest guard negative shift, then best reliability)."""
    trained = [r for r in rows if r["epoch"] >= 1]

    def within(row: dict[str, Any]) -> bool:
        shift_ok = max_negative_shift is None or row["guard_negative_shift"] <= max_negative_shift
        drops = [b["drop"] for b in row["benchmarks"].values()]
        return shift_ok and (max_benchmark_drop is None or all(d <= max_benchmark_drop for d in drops))

    allowed = [r for r in trained if within(r)]
    if allowed:
        best = max(allowed, key=lambda r: (r["reliability"], -r["epoch"]))
        return {"epoch": best["epoch"], "limit_met": True,
                "why": f"the best reliability of the {len(allowed)} epoch(s) within the damage limit"}
    best = min(trained, key=lambda r: (r["guard_negative_shift"], -r["reliability"], r["epoch"]))
    return {"epoch": best["epoch"], "limit_met": False,
            "why": "no epoch stayed within the damage limit; this is the least damaging one"}


def damage(steps, epoch: int) -> dict[str, Any]:
    """The guard set's paired comparison at ``epoch`` (intervals, sign test), its refusals and answer collapse."""
    guard = steps.guard.to_pandas()
    ids = set(guard["id"])
    evaluation = steps.evaluation
    before_labels, after = steps.base.labels(), evaluation.labels(epoch)
    after_labels = after.labels()
    paired = compare_labels(before_labels[before_labels["question_id"].isin(ids)],
                            after_labels[after_labels["question_id"].isin(ids)], guard, set())
    detector = RefusalDetector.default(steps.settings["options"].get("refusal_patterns", ()))
    answers = {}
    for name, folder in (("base", steps.base), ("after", after)):
        responses = folder.responses()
        responses = responses[responses["question_id"].isin(ids)]
        answers[name] = {"refusal_rate": refusal_rates(responses, detector)["refusal_rate"],
                         **{k: v for k, v in collapse_stats(responses, detector).items()
                            if k in ("distinct_answers", "top_answer", "top_share")}}
    return {"shift": paired["shift"]["all/lenient"], "transitions": paired["transitions"],
            "accuracy": paired["accuracy"], "answers": answers}


def fact_rows(steps, epoch: int) -> list[dict[str, Any]]:
    """Every fact with its category before, whether it was packed, its category and share of prompts answered
    right at ``epoch`` (the labels of all questions hold the facts too)."""
    after = steps.evaluation.labels(epoch).labels().set_index("question_id")
    packed = set(steps.packed.column("id").to_pylist())
    rows = []
    for fact in steps.facts.to_pylist():
        qid = fact["id"]
        rows.append({"id": qid, "question": fact["question"], "answer": fact["answer"],
                     "before": steps.fact_categories[qid], "packed": qid in packed,
                     "after": after.loc[qid, "category"], "right": float(after.loc[qid, "p_greedy"])})
    return rows


def finish(steps) -> None:
    """Choose, export, report; ``inject.json`` and the manifest's completion are written last."""
    from knowpack.inject.export import export_adapter
    from knowpack.inject.report import first_paragraph, write_report

    config, run = steps.config, steps.run
    summary = steps.evaluation.summary()
    epochs = steps.training.epochs
    rows = epoch_rows(summary, steps.base.labels(), {e: steps.evaluation.labels(e).labels() for e in epochs},
                      steps.guard.to_pandas())
    chosen = choose_epoch(rows, config.max_negative_shift, config.max_benchmark_drop)
    facts = fact_rows(steps, chosen["epoch"])
    given = sum(len(p) for p in steps.inputs.facts.column("paraphrases").to_pylist())
    templates = sum(len(p) for p in steps.facts.column("paraphrases").to_pylist()) - given
    record = {
        "knowpack": __version__,
        "model": steps.loaded.spec,
        "facts": {"file": str(config.facts), "rows": steps.facts.num_rows, "skipped": steps.inputs.skipped,
                  "known": [f["id"] for f in facts if f["before"] != "Unknown"], "kept_known": config.keep_known,
                  "packed": steps.packed.num_rows, "stuck": sum(f["packed"] and f["right"] == 1.0 for f in facts),
                  "paraphrases": {"given": given, "templates": templates, "generated": steps.generated}},
        "labels": {"prompts": steps.settings["prompts"], "shots": steps.base.settings["shots"], "samples": 0},
        "mixture": {"extra": steps.mixture.extra, "reasons": steps.mixture.reasons, "given": steps.mixture.given,
                    "known_available": steps.known_available, "known_skipped": steps.inputs.known_skipped},
        "guard": {"source": str(config.guard) if config.guard else "the embedded question set",
                  "questions": steps.guard.num_rows, "of": steps.guard_source_size,
                  "size": min(steps.settings["guard_size"] or steps.guard_source_size, steps.guard_source_size),
                  "size_from": "--guard-size" if config.guard_size else f"the {steps.settings['machine'].upper()} "
                  "default"},
        "limit": {"max_negative_shift": config.max_negative_shift, "max_benchmark_drop": config.max_benchmark_drop},
        "epochs": rows,
        "chosen": chosen,
        "damage": damage(steps, chosen["epoch"]),
        "fact_table": facts,
        "train": steps.train_config.result_dict(),
        "benchmark_options": {k: v for k, v in steps.settings["options"].items()},
    }
    record["summary"] = first_paragraph(record)
    adapter_files = export_adapter(steps.training, chosen["epoch"], run.file(layout.ADAPTER_DIR), record)
    pictures = write_report(record, run.path)
    write_json(run.file(layout.SUMMARY_FILE), record)
    run.finish([layout.SUMMARY_FILE, layout.HTML_FILE, layout.MARKDOWN_FILE, *pictures, *adapter_files],
               summary=record["summary"], chosen_epoch=chosen["epoch"])
