"""Sweeps: a YAML grid of packing runs -> ``SWEEP_DIR/runs/<run_id>/`` (train + eval) and ``sweep.parquet``.

``run_sweep`` opens the sweep folder (resume / refuse like any run folder), makes the questions and labels if the
file asks for them, checks every run against the fact pools before anything trains, then hands the runs that are
not finished to an executor (local: one process; Ray: one actor per GPU or CPU slot). Finished runs are skipped,
half-finished ones resume from their last complete epoch, and the index is rewritten after every run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol

import yaml

from knowpack.errors import InputError, KnowpackError
from knowpack.runfolder import open_run, read_parquet, write_bytes
from knowpack.sweep.runs import DONE, FAILED, RunResult, SweepIndex, SweepJob, base_model, is_complete, run_state
from knowpack.sweep.spec import RunSpec, SweepConfig, load_sweep

__all__ = ["SweepConfig", "load_sweep", "run_sweep", "Executor"]

INDEX = "sweep.parquet"
SWEEP_FILE = "sweep.yaml"


class Executor(Protocol):
    name: str

    def run(self, job: SweepJob, runs: list[RunSpec], record) -> None:
        """Do ``runs`` (train + evaluate each) and call ``record(RunResult)`` as each one ends."""


def run_sweep(config: SweepConfig, executor: Executor | None = None, *, overwrite: bool = False) -> Path:
    """Run every unfinished run of the sweep; returns the sweep folder. Raises KnowpackError if runs failed.
    ``overwrite`` empties a sweep folder made with another model, data or fixed options (all its runs go)."""
    from knowpack.sweep.local import LocalExecutor

    executor = executor or LocalExecutor()
    runs = config.runs()
    check_stage_options(config)
    sweep = open_run(
        config.out,
        "sweep",
        sweep_key(config),
        {name: path for name, path in (("questions", config.questions), ("labels", config.labels)) if path},
        overwrite=overwrite,
    )
    sweep.note(complete=False, grid=config.grid, runs=[run.run_id for run in runs], executor=executor.name)
    write_bytes(sweep.file(SWEEP_FILE), yaml.safe_dump(describe(config), sort_keys=False).encode())
    questions, labels = prepare_data(config, sweep.path)
    check_pools(config, runs, questions, labels)

    job = SweepJob(
        out=sweep.path.resolve(),
        model=config.model,
        questions=questions,
        labels=labels,
        device=config.device,
        dtype=config.dtype,
        trust_remote_code=config.trust_remote_code,
    )
    index = SweepIndex(job, runs, previous_results(sweep.path / INDEX))
    todo = [run for run in runs if run_state(job.run_dir(run))[0] != DONE]
    index.write()
    done_before = len(runs) - len(todo)
    print(f"knowpack sweep: {len(runs)} runs, {done_before} already done, {len(todo)} to do "
          f"({executor.name} executor) -> {sweep.path}", file=sys.stderr, flush=True)

    finished = 0

    def record(result: RunResult) -> None:
        nonlocal finished
        finished += 1
        index.record(result)
        note = f": {result.error}" if result.status == FAILED else ""
        print(f"  [{finished}/{len(todo)}] {result.run_id} {result.status} in {result.seconds:.0f} s{note}",
              file=sys.stderr, flush=True)

    executor.run(job, todo, record)
    rows = index.write()
    failed = [row for row in rows if row["status"] != DONE]
    if failed:
        first = next((row for row in failed if row["error"]), failed[0])
        raise KnowpackError(
            f"{len(failed)} of {len(rows)} runs are not done (e.g. {first['run_id']}: {first['error'] or first['status']});"
            f" see {sweep.path / INDEX} and {sweep.path / 'logs'}, fix and run the same command to resume"
        )
    sweep.finish([INDEX, SWEEP_FILE], n_runs=len(rows))
    return sweep.path


def sweep_key(config: SweepConfig) -> dict:
    """What makes two sweeps the same folder: everything but the grid (a grown grid resumes in place)."""
    return {
        "model": config.model,
        "trust_remote_code": config.trust_remote_code,
        "make_questions": config.make_questions,
        "make_labels": config.make_labels,
        "train": config.train,
        "evaluate": config.evaluate,
    }


def describe(config: SweepConfig) -> dict:
    """The sweep as run (paths resolved, ranges expanded): a copy kept in the sweep folder."""
    data = {"questions": str(config.questions) if config.questions else None,
            "labels": str(config.labels) if config.labels else None}
    make = {k: v for k, v in (("questions", config.make_questions), ("labels", config.make_labels)) if v is not None}
    return {
        "name": config.name,
        "model": config.model,
        "device": config.device,
        "dtype": config.dtype,
        "trust_remote_code": config.trust_remote_code,
        "data": {**{k: v for k, v in data.items() if v}, **({"make": make} if make else {})},
        "train": config.train,
        "evaluate": config.evaluate,
        "grid": config.grid,
    }


def previous_results(index_path: Path) -> dict[str, RunResult]:
    """Timings and errors of an earlier invocation, so the index keeps them across resumes."""
    if not index_path.is_file():
        return {}
    table = read_parquet(index_path).to_pylist()
    return {
        row["run_id"]: RunResult(row["run_id"], row["status"], row["seconds"] or 0.0, row["error"] or "")
        for row in table
        if row.get("seconds") is not None or row.get("status") == FAILED
    }


def check_stage_options(config: SweepConfig) -> None:
    """``train:`` / ``evaluate:`` keys must be fields of the stages' configs (one line naming the key)."""
    import dataclasses

    from knowpack.evaluate import EvaluateConfig
    from knowpack.train import TrainConfig

    for section, options, stage_config in (("train", config.train, TrainConfig), ("evaluate", config.evaluate, EvaluateConfig)):
        fields = {f.name for f in dataclasses.fields(stage_config)}
        for key in options:
            if key not in fields:
                raise InputError(f"{section}.{key}: unknown key (options: {', '.join(sorted(fields))})")


def prepare_data(config: SweepConfig, sweep_dir: Path) -> tuple[Path, Path]:
    """The questions file and label folder: given, or made inside ``SWEEP_DIR/data/`` (resumed if half done).
    Labels are made on this process's base model, which the local executor then reuses for every run."""
    questions = config.questions
    if config.make_questions is not None:
        from knowpack.kg import QuestionsConfig, build_questions

        folder = build_questions(_stage_config(QuestionsConfig, config.make_questions, "data.make.questions",
                                               out=str(sweep_dir / "data" / "questions")))
        questions = Path(folder) / "questions.parquet"
    labels = config.labels
    if config.make_labels is not None:
        from knowpack.probe import LabelConfig, LabelTarget, label_loaded

        labels = sweep_dir / "data" / "labels"
        if not is_complete(labels):
            label_config = _stage_config(LabelConfig, config.make_labels, "data.make.labels", model=config.model,
                                         questions=questions, out=labels)
            loaded = base_model(config.model, config.device, config.dtype, config.trust_remote_code)
            label_loaded(loaded, label_config, [LabelTarget(out=labels)])
    assert questions is not None and labels is not None  # parse_sweep requires one source of each
    return Path(questions).resolve(), Path(labels).resolve()


def _stage_config(cls, options: dict, section: str, **fixed):
    import dataclasses

    fields = {f.name for f in dataclasses.fields(cls)}
    for key in options:
        if key not in fields or key in fixed:
            why = "set by the sweep" if key in fixed else "unknown key"
            raise InputError(f"{section}.{key}: {why} (options: {', '.join(sorted(fields - set(fixed)))})")
    return cls(**fixed, **options)


def check_pools(config: SweepConfig, runs: list[RunSpec], questions: Path, labels: Path) -> None:
    """Draw every run's facts now (cheap) so a grid asking for more facts than the pools hold fails before
    hours of training, naming the grid value, instead of failing run by run."""
    from knowpack.train import TrainConfig
    from knowpack.train.mixture import load_pool, parse_extra, sample_facts

    default_seed = TrainConfig.seed
    pool = load_pool(labels, questions)
    extra_pool = load_pool(Path(config.train["extra_pool"])) if config.train.get("extra_pool") else None
    seen = set()
    for run in runs:
        draw = (run.params["unknown"], run.params["mixture"], run.params.get("seed", default_seed))
        if draw in seen:
            continue
        seen.add(draw)
        try:
            sample_facts(
                pool,
                run.params["unknown"],
                [parse_extra(item) for item in run.extra],
                run.params.get("seed", default_seed),
                allow_repeat=bool(config.train.get("allow_repeat", False)),
                extra_pool=extra_pool,
            )
        except InputError as err:
            raise InputError(
                f"grid: unknown={run.params['unknown']} with mixture {run.params['mixture']} cannot be drawn: {err}"
            ) from err
