"""The evaluate stage's work: label the packed facts at every epoch (or the last) and all questions at the shift
epochs, with the base labels' probe settings; then run every metric in order and write its tables and
``summary.json``. With ``damage_if_reliability`` all questions are labelled only when the packed facts were
learnt, and the metrics that read them are skipped otherwise: a capacity search needs no damage figure for a
run that already broke on reliability, and labelling all questions is most of an evaluation's cost."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from knowpack.errors import InputError
from knowpack.evaluate.folder import (LABELS_DIR, PROBE_LABELS_DIR, PROBE_QUESTIONS_FILE, SUMMARY_FILE, Evaluation,
                                      epoch_dir)
from knowpack.evaluate.metrics import MetricContext, measured_metrics
from knowpack.evaluate.metrics.reliability import heldout_paraphrase_questions, reliability
from knowpack.evaluate.stage import EvaluateConfig
from knowpack.kg.folder import QUESTIONS_SCHEMA, read_questions
from knowpack.models import LoadedModel
from knowpack.probe.folder import LabelFolder
from knowpack.runfolder import is_complete, open_run, write_json, write_parquet
from knowpack.train.folder import TrainRun

log = logging.getLogger(__name__)

SAMPLING_SETTINGS = ("n_samples", "temperature", "sample_seed")


def label_with_base_settings(loaded: LoadedModel, base: LabelFolder, questions: Path,
                             targets: list[tuple[Path, Path | None]], *, greedy_only: bool = False,
                             progress: bool = True) -> None:
    """Label ``questions`` into each (folder, adapter) target not yet complete, with the base labels' settings,
    and check that every resulting folder records the same settings (so before/after compare like with like).

    ``greedy_only`` drops the samples (reliability reads greedy answers only, and the engine's greedy answer does
    not depend on the sampling settings), which makes labelling the packed facts at every epoch cheap.
    The model is identified by its weights' fingerprint (checked by the caller), not by the spec string.
    """
    from knowpack.probe.stage import LabelConfig, LabelTarget, run_loaded

    settings = base.settings
    names = {f.name for f in dataclasses.fields(LabelConfig)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise InputError(f"{base.path}: made with probe settings this knowpack does not know ({', '.join(unknown)})")
    wanted = {**settings, "n_samples": 0} if greedy_only else settings
    todo = [LabelTarget(out=out, adapter=adapter) for out, adapter in targets if not is_complete(out)]
    if todo:
        log.info("labelling %s with %d model(s): %s", questions, len(todo), ", ".join(str(t.out) for t in todo))
        run_loaded(loaded, LabelConfig(**{**wanted, "questions": questions, "out": todo[0].out,
                                          "progress": progress}), todo)
    ignored = {"model", "questions", *(SAMPLING_SETTINGS if greedy_only else ())}
    for out, _ in targets:
        made = LabelFolder(out).settings
        differing = sorted(k for k in wanted if k not in ignored and made.get(k) != wanted[k])
        if differing:
            raise InputError(f"{out}: labelled with other probe settings than {base.path} ({', '.join(differing)})")


def evaluate_loaded(loaded: LoadedModel, config: EvaluateConfig) -> Evaluation:
    """Evaluate the training run ``config.run`` on an already-loaded base model."""
    run = TrainRun(config.run)
    if run.model_fingerprint and run.model_fingerprint != loaded.fingerprint:
        raise InputError(f"{run.path}: trained on model {run.model_fingerprint}, but the loaded model is "
                         f"{loaded.fingerprint}")
    base = run.labels()
    questions_path = run.questions_path
    folder = open_run(config.out, "evaluate", config,
                      {"run": run.path, "labels": base.path, "questions": questions_path},
                      extra_key={"model": loaded.fingerprint, **loaded.numerics()}, overwrite=config.overwrite)
    if folder.complete:
        summary = Evaluation(folder.path).summary()
        last_reliability = summary["reliability"]["trained"][str(max(run.epochs))]["lenient"]
        if summary.get("damage_measured", True) or not damage_is_measured(config, last_reliability):
            return Evaluation(folder.path)
        folder.note(complete=False)  # the damage is wanted now: label all questions, reusing the probe labels
    questions = read_questions(questions_path, required=tuple(QUESTIONS_SCHEMA.names)).to_pandas()
    train_set = run.train_set()
    shift_epochs = run.shift_epochs(config.shift_epochs)

    # answers: the packed facts and their held-out paraphrases under every epoch, all questions under some
    facts = questions[questions["id"].isin(run.unknown_ids)]
    paraphrases = heldout_paraphrase_questions(questions, train_set, run.unknown_ids, config.heldout_paraphrases)
    probe_questions = folder.file(PROBE_QUESTIONS_FILE)
    if not probe_questions.is_file():
        write_parquet(probe_questions, pd.concat([facts, paraphrases], ignore_index=True)[QUESTIONS_SCHEMA.names],
                      schema=QUESTIONS_SCHEMA)
    probe_epochs = [0, *run.epochs] if config.reliability_epochs == "all" else [max(run.epochs)]
    probe_dirs = {e: folder.file(f"{PROBE_LABELS_DIR}/{epoch_dir(e)}") for e in probe_epochs}
    label_with_base_settings(loaded, base, probe_questions,
                             [(path, run.epochs.get(e)) for e, path in probe_dirs.items()], greedy_only=True,
                             progress=config.progress)
    probe = {e: LabelFolder(path).responses() for e, path in probe_dirs.items()}
    last_reliability = reliability(probe[max(run.epochs)], set(run.unknown_ids))["reliability_lenient"]
    damage_measured = damage_is_measured(config, last_reliability)
    if not damage_measured:
        shift_epochs = []
    after_dirs = {e: folder.file(f"{LABELS_DIR}/{epoch_dir(e)}") for e in shift_epochs}
    label_with_base_settings(loaded, base, questions_path, [(path, run.epochs[e]) for e, path in after_dirs.items()],
                             progress=config.progress)

    ctx = MetricContext(
        config=config, questions=questions, train_set=train_set, unknown_ids=run.unknown_ids,
        paraphrase_ids=list(paraphrases["id"]), base_responses=base.responses(), base_labels=base.labels(),
        probe=probe,
        after={e: (LabelFolder(path).responses(), LabelFolder(path).labels()) for e, path in after_dirs.items()},
        loaded=loaded, work_dir=folder.path, adapters={e: run.epochs[e] for e in shift_epochs},
    )
    tables = compute_tables(ctx, damage_measured)
    outputs = []
    for name, table in tables.items():
        write_parquet(folder.file(f"{name}.parquet"), table)
        outputs.append(f"{name}.parquet")
    write_json(folder.file(SUMMARY_FILE), summarize(tables, ctx, run, config, damage_measured))
    folder.finish([*outputs, SUMMARY_FILE])
    return Evaluation(folder.path)


def damage_is_measured(config: EvaluateConfig, last_reliability: float) -> bool:
    """Whether all questions are labelled: always, unless ``damage_if_reliability`` is set and the last epoch's
    lenient reliability on the packed facts stays below it (a capacity search's run that has failed already).
    The setting is not in the folder's key: a folder evaluated without the damage gains it when asked again with
    a bound its reliability meets."""
    return config.damage_if_reliability is None or last_reliability >= config.damage_if_reliability


def compute_tables(ctx: MetricContext, damage_measured: bool = True) -> dict[str, pd.DataFrame]:
    """Every metric's tables, in metric order (a metric may read the tables of those before it)."""
    for metric in measured_metrics(damage_measured):
        ctx.tables.update(metric.compute(ctx))
    return ctx.tables


def summarize(tables: dict[str, pd.DataFrame], ctx: MetricContext, run: TrainRun, config: EvaluateConfig,
              damage_measured: bool = True) -> dict[str, Any]:
    """``summary.json``: what was evaluated, then every metric's block."""
    summary: dict[str, Any] = {
        "run": str(run.path),
        "facts": len(run.unknown_ids),
        "train_rows": len(ctx.train_set),
        "train_kinds": ctx.train_set["kind"].value_counts().sort_index().to_dict(),
        "epochs": sorted(run.epochs),
        "shift_epochs": run.shift_epochs(config.shift_epochs) if damage_measured else [],
        "damage_measured": damage_measured,
    }
    for metric in measured_metrics(damage_measured):
        summary.update(metric.summarize(tables, ctx))
    return summary

