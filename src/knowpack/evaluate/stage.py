"""The evaluate stage: label a training run's adapters with the base labels' probe settings, then measure.

Layout inside the training run folder (``RUN/eval/`` unless ``out`` says otherwise)::

    eval/manifest.json              the stage's manifest (config, inputs, outputs, complete)
    eval/probe_questions.parquet    the packed facts + their held-out paraphrases (questions.parquet schema)
    eval/probe_labels/epoch_NN/     labels of that set: epoch_00 = base model, then every epoch's adapter
    eval/labels/epoch_NN/           labels of ALL questions with the adapters of the shift epochs
    eval/benchmarks/<model>.parquet harness results of one model (the resume unit)
    eval/*.parquet, summary.json    the tables of docs/metrics.md

"Before" is always the base label folder the run was trained from, and every "after" label folder is made with
exactly its probe settings (read from its manifest and checked after labelling). Label folders and benchmark
results that are already complete are reused, so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from knowpack.errors import InputError
from knowpack.evaluate import benchmarks as bench
from knowpack.evaluate.collapse import ExplosionRule, collapse_stats, exploded_answers, top_answers
from knowpack.evaluate.refusal import RefusalDetector, refusal_rates
from knowpack.evaluate.reliability import best_epoch, heldout_paraphrase_questions, reliability
from knowpack.evaluate.shift import CATEGORY_COLUMN, matrix_grid, paired_categories, shift_fractions, shift_matrix
from knowpack.evaluate.spillover import spillover_questions, spillover_summary
from knowpack.models import LoadedModel, load_model
from knowpack.assets import cache_dir
from knowpack.runfolder import (
    MANIFEST, NOT_RESULT, config_dict, open_run, read_parquet, stable_hash, write_json, write_parquet,
)

log = logging.getLogger(__name__)

SHIFT_EPOCHS = ("last", "all")
RESPONSES_SCHEMA = pa.schema([("question_id", pa.string()), ("prompt_id", pa.int16()), ("sample_id", pa.int16()),
                              ("answer", pa.string()), ("correct_lenient", pa.bool_()), ("correct_strict", pa.bool_())])
LABELS_SCHEMA = pa.schema([("question_id", pa.string()), ("category", pa.string()), ("category_strict", pa.string())])
TRAIN_SET_SCHEMA = pa.schema([("row_id", pa.int64()), ("kind", pa.string()), ("question_id", pa.string()),
                              ("prompt", pa.string()), ("target", pa.string())])
QUESTION_COLUMNS = ["id", "subject", "relation", "object", "question", "answer", "aliases", "bucket", "popularity",
                    "relation_domain", "template_id", "paraphrases"]


@dataclass
class EvaluateConfig:
    """Evaluation of one training run. Every option is documented in docs/metrics.md."""

    run: Path = field(metadata=NOT_RESULT)
    out: Path | None = field(default=None, metadata=NOT_RESULT)
    model: str | None = field(default=None, metadata=NOT_RESULT)
    shift_epochs: str = "last"
    heldout_paraphrases: int = 3
    refusal_patterns: tuple[str, ...] = ()
    explode_factor: float = 5.0
    explode_min_share: float = 0.002
    top_answers: int = 20
    benchmarks: tuple[str, ...] = (bench.MMLU,)
    mmlu_subjects: tuple[str, ...] = ()
    limit: int | None = None
    chat_template: bool = False
    benchmarks_dir: Path | None = None
    benchmark_batch_size: int = field(default=8, metadata=NOT_RESULT)
    device: str | None = field(default=None, metadata=NOT_RESULT)
    dtype: str | None = field(default=None, metadata=NOT_RESULT)
    trust_remote_code: bool = field(default=False, metadata=NOT_RESULT)
    overwrite: bool = field(default=False, metadata=NOT_RESULT)

    def __post_init__(self) -> None:
        self.run = Path(self.run)
        self.out = Path(self.out) if self.out is not None else self.run / "eval"
        self.refusal_patterns = tuple(self.refusal_patterns)
        self.benchmarks = tuple(self.benchmarks)
        self.mmlu_subjects = tuple(self.mmlu_subjects)
        self.benchmarks_dir = Path(self.benchmarks_dir) if self.benchmarks_dir is not None else None
        if self.shift_epochs not in SHIFT_EPOCHS:
            raise InputError(f"--shift-epochs {self.shift_epochs}: expected one of {', '.join(SHIFT_EPOCHS)}")
        if self.heldout_paraphrases < 0 or self.top_answers < 1:
            raise InputError("--heldout-paraphrases must be ≥ 0 and --top-answers ≥ 1")
        self.explosion_rule(), self.benchmark_config()  # they check their values: fail now, not after labelling

    def explosion_rule(self) -> ExplosionRule:
        return ExplosionRule(self.explode_factor, self.explode_min_share)

    def benchmark_config(self) -> bench.BenchmarkConfig:
        return bench.BenchmarkConfig(self.benchmarks, self.mmlu_subjects, self.limit, self.chat_template,
                                     self.benchmarks_dir, self.benchmark_batch_size)


# ---------------------------------------------------------------- the training run


@dataclass
class TrainingRun:
    """What evaluation needs from a complete training run folder."""

    path: Path
    manifest: dict[str, Any]
    labels: Path
    questions: Path
    epochs: dict[int, Path]
    train_set: pd.DataFrame
    unknown_ids: list[str]

    @classmethod
    def read(cls, path: Path) -> TrainingRun:
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise InputError(f"{path}: not a training run folder (no {MANIFEST}); run `knowpack train` first")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("stage") != "train":
            raise InputError(f"{path}: holds a {manifest.get('stage')} run, not a training run")
        if not manifest.get("complete"):
            raise InputError(f"{path}: the training run is not complete; resume it with `knowpack train` first")
        inputs = manifest.get("inputs", {})
        if "labels" not in inputs or "questions" not in inputs:
            raise InputError(f"{path}: its manifest names no base label folder or questions file")
        epochs = {
            int(folder.name.removeprefix("epoch_")): folder
            for folder in sorted((path / "epochs").glob("epoch_[0-9]*"))
            if (folder / "adapter_model.safetensors").is_file()
        }
        if not epochs:
            raise InputError(f"{path}: no complete epoch (epochs/epoch_NN/adapter_model.safetensors)")
        train_set = read_parquet(path / "train_set.parquet", TRAIN_SET_SCHEMA).to_pandas()
        return cls(path, manifest, Path(inputs["labels"]["path"]), Path(inputs["questions"]["path"]), epochs,
                   train_set, list(manifest.get("unknown_ids") or []))

    def shift_epochs(self, which: str) -> list[int]:
        return sorted(self.epochs) if which == "all" else [max(self.epochs)]


def read_label_folder(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(responses, labels) of a complete label folder."""
    manifest = folder / MANIFEST
    if not manifest.is_file() or not json.loads(manifest.read_text()).get("complete"):
        raise InputError(f"{folder}: not a complete label folder; run `knowpack probe` for it first")
    responses = read_parquet(folder / "responses.parquet", RESPONSES_SCHEMA).to_pandas()
    labels = read_parquet(folder / "labels.parquet", LABELS_SCHEMA).to_pandas()
    return responses, labels


def epoch_dir(epoch: int) -> str:
    return f"epoch_{epoch:02d}"


# ---------------------------------------------------------------- labelling with the base labels' settings


def _is_complete(folder: Path) -> bool:
    manifest = folder / MANIFEST
    return manifest.is_file() and bool(json.loads(manifest.read_text()).get("complete"))


def probe_settings(base_labels: Path) -> dict[str, Any]:
    """The result-affecting probe settings the base labels were made with (their manifest's config)."""
    manifest = base_labels / MANIFEST
    if not manifest.is_file():
        raise InputError(f"{base_labels}: base label folder has no {MANIFEST}")
    return dict(json.loads(manifest.read_text()).get("config", {}))


SAMPLING_SETTINGS = ("n_samples", "temperature", "sample_seed")


def label_with_base_settings(loaded: LoadedModel, base_labels: Path, questions: Path,
                             targets: list[tuple[Path, Path | None]], *, greedy_only: bool = False) -> None:
    """Label ``questions`` into each (folder, adapter) target not yet complete, with the base labels' settings,
    and check that every resulting folder records the same settings (so before/after compare like with like).

    ``greedy_only`` drops the samples (reliability reads greedy answers only, and the engine's greedy answer does
    not depend on the sampling settings), which makes labelling the packed facts at every epoch cheap.
    The model is identified by its weights' fingerprint (checked by the caller), not by the spec string.
    """
    from knowpack.probe import LabelConfig, LabelTarget, label_loaded

    settings = probe_settings(base_labels)
    names = {f.name for f in dataclasses.fields(LabelConfig)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise InputError(f"{base_labels}: made with probe settings this knowpack does not know ({', '.join(unknown)})")
    wanted = {**settings, "n_samples": 0} if greedy_only else settings
    todo = [LabelTarget(out=out, adapter=adapter) for out, adapter in targets if not _is_complete(out)]
    if todo:
        log.info("labelling %s with %d model(s): %s", questions, len(todo), ", ".join(str(t.out) for t in todo))
        label_loaded(loaded, LabelConfig(**{**wanted, "questions": questions, "out": todo[0].out}), todo)
    ignored = {"model", "questions", *(SAMPLING_SETTINGS if greedy_only else ())}
    for out, _ in targets:
        made = probe_settings(out)
        differing = sorted(k for k in wanted if k not in ignored and made.get(k) != wanted[k])
        if differing:
            raise InputError(f"{out}: labelled with other probe settings than {base_labels} ({', '.join(differing)})")


# ---------------------------------------------------------------- the stage


def evaluate(config: EvaluateConfig) -> Path:
    """Load the model the run was trained on and evaluate it (see :func:`evaluate_loaded`)."""
    run = TrainingRun.read(config.run)
    spec = config.model or probe_settings(run.labels).get("model")
    if not spec:
        raise InputError(f"{run.labels}: its manifest names no model; pass --model")
    loaded = load_model(spec, device=config.device, dtype=config.dtype, trust_remote_code=config.trust_remote_code)
    return evaluate_loaded(loaded, config)


def evaluate_loaded(loaded: LoadedModel, config: EvaluateConfig) -> Path:
    """Evaluate the training run ``config.run`` on an already-loaded base model; returns the eval folder."""
    run = TrainingRun.read(config.run)
    trained_on = run.manifest.get("extra_key", {}).get("model")
    if trained_on and trained_on != loaded.fingerprint:
        raise InputError(f"{run.path}: trained on model {trained_on}, but the loaded model is {loaded.fingerprint}")
    folder = open_run(config.out, "evaluate", config, {"run": run.path, "labels": run.labels,
                                                       "questions": run.questions},
                      extra_key={"model": loaded.fingerprint, "dtype": _dtype(loaded)}, overwrite=config.overwrite)
    if folder.complete:
        return folder.path
    questions = read_parquet(run.questions).to_pandas()
    base_responses, base_labels = read_label_folder(run.labels)
    shift_epochs = run.shift_epochs(config.shift_epochs)

    # 1. answers: the packed facts and their held-out paraphrases under every epoch, all questions under some
    facts = questions[questions["id"].isin(run.unknown_ids)]
    paraphrases = heldout_paraphrase_questions(questions, run.train_set, run.unknown_ids, config.heldout_paraphrases)
    probe_questions = folder.file("probe_questions.parquet")
    if not probe_questions.is_file():
        write_parquet(probe_questions, pd.concat([facts, paraphrases], ignore_index=True)[QUESTION_COLUMNS])
    probe_targets = [(folder.file(f"probe_labels/{epoch_dir(0)}"), None)]
    probe_targets += [(folder.file(f"probe_labels/{epoch_dir(e)}"), path) for e, path in run.epochs.items()]
    label_with_base_settings(loaded, run.labels, probe_questions, probe_targets, greedy_only=True)
    full_targets = [(folder.file(f"labels/{epoch_dir(e)}"), run.epochs[e]) for e in shift_epochs]
    label_with_base_settings(loaded, run.labels, run.questions, full_targets)

    # 2. benchmarks: the base model and the shift epochs' adapters
    benchmark_table = _benchmarks(loaded, config, folder.file("benchmarks"), run, shift_epochs)

    # 3. metrics
    tables = measure(
        questions=questions,
        train_set=run.train_set,
        unknown_ids=run.unknown_ids,
        paraphrase_ids=list(paraphrases["id"]),
        base=(base_responses, base_labels),
        probe={e: read_label_folder(folder.file(f"probe_labels/{epoch_dir(e)}"))[0] for e in [0, *run.epochs]},
        after={e: read_label_folder(folder.file(f"labels/{epoch_dir(e)}")) for e in shift_epochs},
        detector=RefusalDetector.default(config.refusal_patterns),
        rule=config.explosion_rule(),
        top_k=config.top_answers,
    )
    tables["benchmarks"] = benchmark_table
    outputs = []
    for name, table in tables.items():
        write_parquet(folder.file(f"{name}.parquet"), table)
        outputs.append(f"{name}.parquet")
    write_json(folder.file("summary.json"), summarize(tables, run, config))
    folder.finish([*outputs, "summary.json"])
    return folder.path


def _dtype(loaded: LoadedModel) -> str:
    return str(next(loaded.model.parameters()).dtype).removeprefix("torch.")


def _benchmarks(loaded: LoadedModel, config: EvaluateConfig, work_dir: Path, run: TrainingRun,
                shift_epochs: list[int]) -> pd.DataFrame:
    """Benchmark results of the base model and each shift epoch, one resumable file per model."""
    if not config.benchmarks:
        return pd.DataFrame(columns=bench.RESULT_COLUMNS)
    plan = None
    parts = []
    for label, adapter in [("base", None), *((epoch_dir(e), run.epochs[e]) for e in shift_epochs)]:
        done = _base_scores_file(loaded, config) if adapter is None else work_dir / f"{label}.parquet"
        if not done.is_file():
            plan = plan or bench.plan_tasks(config.benchmark_config())
            write_parquet(done, bench.run_benchmarks(loaded, label, adapter, config.benchmark_config(), plan))
        parts.append(read_parquet(done).to_pandas())
    return pd.concat(parts, ignore_index=True)


def _base_scores_file(loaded: LoadedModel, config: EvaluateConfig) -> Path:
    """The base model's scores do not depend on the run, so every run of a sweep shares one cached file, keyed
    by the weights' fingerprint, the dtype and the result-affecting benchmark settings."""
    key = stable_hash({"model": loaded.fingerprint, "dtype": _dtype(loaded),
                       "benchmarks": config_dict(config.benchmark_config())})
    return cache_dir() / "benchmark_scores" / f"base-{key}.parquet"


def measure(*, questions: pd.DataFrame, train_set: pd.DataFrame, unknown_ids: list[str], paraphrase_ids: list[str],
            base: tuple[pd.DataFrame, pd.DataFrame], probe: dict[int, pd.DataFrame],
            after: dict[int, tuple[pd.DataFrame, pd.DataFrame]], detector: RefusalDetector, rule: ExplosionRule,
            top_k: int) -> dict[str, pd.DataFrame]:
    """Every metric table from the answers (pure: no files, no model). ``probe``: responses of the packed facts
    and paraphrases per epoch (0 = base); ``after``: (responses, labels) of all questions per shift epoch."""
    base_responses, base_labels = base
    trained_ids = set(train_set["question_id"])
    reliability_rows = []
    for epoch, responses in sorted(probe.items()):
        for scope, ids in (("trained", unknown_ids), ("heldout_paraphrase", paraphrase_ids)):
            if ids:
                reliability_rows.append({"epoch": epoch, "scope": scope, **reliability(responses, set(ids))})

    by_epoch: dict[str, list[pd.DataFrame]] = {name: [] for name in (
        "shift", "shift_fractions", "top_answers", "exploded", "spillover", "spillover_summary")}
    refusal_rows = [{"epoch": 0, **refusal_rates(base_responses, detector)}]
    collapse_rows = [{"epoch": 0, **collapse_stats(base_responses)}]
    by_epoch["top_answers"].append(top_answers(base_responses, top_k).assign(epoch=0))
    targets = train_set["target"].tolist()
    for epoch, (responses, labels) in sorted(after.items()):
        for match in CATEGORY_COLUMN:
            pairs = paired_categories(base_labels, labels, questions, trained_ids, match)
            by_epoch["shift"].append(shift_matrix(pairs).assign(epoch=epoch, match=match))
            by_epoch["shift_fractions"].append(shift_fractions(pairs).assign(epoch=epoch, match=match))
        refusal_rows.append({"epoch": epoch, **refusal_rates(responses, detector)})
        collapse_rows.append({"epoch": epoch, **collapse_stats(responses)})
        by_epoch["top_answers"].append(top_answers(responses, top_k).assign(epoch=epoch))
        exploded = exploded_answers(base_responses, responses, rule)
        by_epoch["exploded"].append(exploded.assign(epoch=epoch))
        spill = spillover_questions(
            paired_categories(base_labels, labels, questions, trained_ids, "lenient"), questions,
            base_responses, responses, trained_ids=trained_ids, train_targets=targets,
            exploded_keys=set(exploded["key"]), detector=detector,
        )
        by_epoch["spillover"].append(spill.assign(epoch=epoch))
        by_epoch["spillover_summary"].append(spillover_summary(spill).assign(epoch=epoch))

    tables = {
        "reliability": pd.DataFrame(reliability_rows),
        "refusals": pd.DataFrame(refusal_rows),
        "collapse": pd.DataFrame(collapse_rows),
        **{name: pd.concat(parts, ignore_index=True) for name, parts in by_epoch.items() if parts},
    }
    return {name: _epoch_first(table) for name, table in tables.items()}


def _epoch_first(table: pd.DataFrame) -> pd.DataFrame:
    if "epoch" not in table.columns:
        return table
    table = table.astype({"epoch": "int32"})
    return table[["epoch", *[c for c in table.columns if c != "epoch"]]]


# ---------------------------------------------------------------- summary


def summarize(tables: dict[str, pd.DataFrame], run: TrainingRun, config: EvaluateConfig) -> dict[str, Any]:
    """The headline numbers of ``summary.json`` (the tables hold everything)."""
    reliability_table = tables["reliability"]
    fractions = tables.get("shift_fractions", pd.DataFrame())
    last = max(run.shift_epochs(config.shift_epochs))
    summary: dict[str, Any] = {
        "run": str(run.path),
        "facts": len(run.unknown_ids),
        "train_rows": len(run.train_set),
        "train_kinds": run.train_set["kind"].value_counts().sort_index().to_dict(),
        "epochs": sorted(run.epochs),
        "shift_epochs": run.shift_epochs(config.shift_epochs),
        "reliability": {
            scope: {
                str(r.epoch): {"lenient": r.reliability_lenient, "strict": r.reliability_strict}
                for r in part.itertuples()
            }
            for scope, part in reliability_table.groupby("scope")
        } if len(reliability_table) else {},
        "best_epoch": best_epoch(reliability_table) if len(reliability_table) else None,
        "best_epoch_heldout_paraphrase": best_epoch(reliability_table, "heldout_paraphrase")
        if len(reliability_table) else None,
    }
    overall = fractions[(fractions["epoch"] == last) & (fractions["breakdown"] == "overall")]
    summary["shift"] = {
        f"{r.scope}/{r.match}": {"n_questions": r.n_questions, "positive": r.positive, "negative": r.negative,
                                 "n_positive": r.n_positive, "n_negative": r.n_negative}
        for r in overall.itertuples()
    }
    matrix = tables["shift"][(tables["shift"]["epoch"] == last) & (tables["shift"]["match"] == "lenient")]
    summary["shift_matrix"] = {scope: matrix_grid(matrix, scope).to_dict(orient="index") for scope in ("all", "not_trained")}
    refusals = tables["refusals"].set_index("epoch")
    summary["refusal_rate"] = {"base": refusals.loc[0, "refusal_rate"], "after": refusals.loc[last, "refusal_rate"]}
    collapse = tables["collapse"].set_index("epoch")
    summary["collapse"] = {
        name: {k: collapse.loc[epoch, k] for k in ("distinct_answers", "mean_frequency", "std_frequency", "top_answer")}
        for name, epoch in (("base", 0), ("after", last))
    }
    exploded = tables.get("exploded", pd.DataFrame(columns=["epoch", "answer", "count"]))
    exploded = exploded[exploded["epoch"] == last]
    summary["exploded_answers"] = {r.answer: int(r.count) for r in exploded.head(10).itertuples()}
    spill = tables["spillover_summary"]
    spill = spill[(spill["epoch"] == last) & (spill["scope"] == "not_trained")].set_index("transition")
    summary["spillover"] = {
        t: {c: spill.loc[t, c] for c in ("n_shifted", "lost_refusal", "exploded_answer", "target_leakage",
                                         "same_domain", "explained")}
        for t in ("positive", "negative", "shifted")
    }
    summary["benchmarks"] = _benchmark_summary(tables["benchmarks"], config)
    return summary


def _benchmark_summary(table: pd.DataFrame, config: EvaluateConfig) -> dict[str, Any]:
    settings = {"chat_template": config.chat_template, "limit": config.limit,
                "mmlu_subjects": list(config.mmlu_subjects) or "all", "fewshot_seed": bench.FEWSHOT_SEED}
    results: dict[str, Any] = {}
    for r in bench.headline(table).itertuples() if len(table) else ():
        entry = results.setdefault(f"{r.benchmark}/{r.metric}", {"task_version": r.task_version,
                                                                  "num_fewshot": r.num_fewshot})
        stderr = None if pd.isna(r.stderr) else r.stderr  # JSON has no NaN
        entry[r.model] = {"value": r.value, "stderr": stderr, "n": r.n_samples}
    return {"settings": settings, "results": results}


# ---------------------------------------------------------------- several runs side by side


def read_summary(run: Path) -> dict[str, Any]:
    """``summary.json`` of a run's complete evaluation (``run`` is the training run or its eval folder)."""
    run = Path(run)
    for folder in (run / "eval", run):
        manifest = folder / MANIFEST
        if manifest.is_file() and json.loads(manifest.read_text()).get("stage") == "evaluate":
            if not json.loads(manifest.read_text()).get("complete"):
                raise InputError(f"{folder}: the evaluation is not complete; run `knowpack evaluate` again")
            return json.loads((folder / "summary.json").read_text())
    raise InputError(f"{run}: no evaluation found; run `knowpack evaluate {run}` first")


def summary_rows(summary: dict[str, Any]) -> dict[str, Any]:
    """The comparable headline numbers of one summary, flat: metric name -> value."""
    last = str(summary["shift_epochs"][-1])
    row: dict[str, Any] = {"facts": summary["facts"], "train rows": summary["train_rows"],
                           "best epoch": summary["best_epoch"]}
    for scope, per_epoch in summary["reliability"].items():
        for match in ("lenient", "strict"):
            row[f"reliability {scope} {match} (epoch {last})"] = per_epoch.get(last, {}).get(match)
    for key, shift in summary["shift"].items():
        row[f"positive shift {key}"] = shift["positive"]
        row[f"negative shift {key}"] = shift["negative"]
    row["refusal rate base"] = summary["refusal_rate"]["base"]
    row["refusal rate after"] = summary["refusal_rate"]["after"]
    row["distinct answers base"] = summary["collapse"]["base"]["distinct_answers"]
    row["distinct answers after"] = summary["collapse"]["after"]["distinct_answers"]
    row["exploded answers"] = len(summary["exploded_answers"])
    for transition in ("positive", "negative"):
        row[f"spill-over {transition} explained"] = summary["spillover"][transition]["explained"]
    for name, result in summary["benchmarks"]["results"].items():
        for model, value in result.items():
            if isinstance(value, dict):
                row[f"{name} {'base' if model == 'base' else 'adapter ' + model}"] = value["value"]
                row[f"{name} {'base' if model == 'base' else 'adapter ' + model} stderr"] = value["stderr"]
    return row


def compare(runs: list[Path]) -> pd.DataFrame:
    """Headline metrics of several evaluated runs side by side: one row per metric, one column per run."""
    if not runs:
        raise InputError("name at least one evaluated run")
    columns = {}
    for run in runs:
        name = Path(run).name if Path(run).name != "eval" else Path(run).parent.name
        while name in columns:
            name += "'"
        columns[name] = summary_rows(read_summary(Path(run)))
    table = pd.DataFrame(columns)
    table.index.name = "metric"
    return table
