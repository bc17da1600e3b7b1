"""Running a sweep: open the sweep folder, check every run's configs and fact draws, make the data if the file
asks for it, then hand the unfinished runs to an executor and keep ``sweep.parquet`` current.

Finished runs are skipped, half-finished ones resume from their last complete epoch, and the index is rewritten
after every run, so one command runs or resumes a whole grid.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from knowpack.errors import InputError, KnowpackError
from knowpack.runfolder import exclusive, is_complete, open_run, read_parquet, write_bytes
from knowpack.sweep.folder import INDEX_FILE, SWEEP_FILE, Sweep
from knowpack.sweep.runs import DONE, FAILED, RunResult, SweepIndex, SweepJob, base_model, run_state
from knowpack.sweep.spec import RunSpec, SweepSpec, evaluate_key


def run_sweep(spec: SweepSpec, executor=None, *, overwrite: bool = False) -> Sweep:
    """Run every unfinished run of the sweep; returns the sweep folder. Raises KnowpackError if runs failed.
    ``overwrite`` empties a sweep folder made with another model, data or fixed options (all its runs go)."""
    from knowpack.sweep.executors.local import LocalExecutor

    executor = executor or LocalExecutor()
    runs = spec.runs()
    spec.check()
    with exclusive(spec.out):
        return _run_sweep(spec, executor, runs, overwrite)


def _run_sweep(spec: SweepSpec, executor, runs: list, overwrite: bool) -> Sweep:
    sweep = open_run(
        spec.out,
        "sweep",
        sweep_key(spec),
        {name: path for name, path in (("questions", spec.questions), ("labels", spec.labels)) if path},
        overwrite=overwrite,
    )
    sweep.note(complete=False, grid=spec.grid, runs=[run.run_id for run in runs], executor=executor.name)
    write_bytes(sweep.file(SWEEP_FILE), yaml.safe_dump(describe(spec), sort_keys=False).encode())
    questions, labels = prepare_data(spec, sweep.path)
    check_pools(spec, runs, questions, labels)

    job = SweepJob(out=sweep.path.resolve(), spec=spec, questions=questions, labels=labels)
    index = SweepIndex(job, runs, previous_results(sweep.path / INDEX_FILE))
    todo = [run for run in runs if run_state(job.run_dir(run))[0] != DONE]
    index.write()
    print(f"knowpack sweep: {len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to do "
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
            f" see {sweep.path / INDEX_FILE} and {sweep.path / 'logs'}, fix and run the same command to resume"
        )
    sweep.finish([INDEX_FILE, SWEEP_FILE], n_runs=len(rows))
    return Sweep(sweep.path)


def sweep_key(spec: SweepSpec) -> dict:
    """What makes two sweeps the same folder: everything but the grid (a grown grid resumes in place) and the
    evaluate options that stay out of an evaluation's own key."""
    key = {
        "model": spec.model,
        "trust_remote_code": spec.trust_remote_code,
        "make_questions": spec.make_questions,
        "make_labels": spec.make_labels,
        "train": spec.train,
        "evaluate": evaluate_key(spec.evaluate),
    }
    key.update({name: value for name, value in (("make_paraphrases", spec.make_paraphrases),
                                                 ("protocol", spec.protocol)) if value is not None})
    return key


def describe(spec: SweepSpec) -> dict:
    """The sweep as run (paths resolved, ranges expanded): a copy kept in the sweep folder."""
    data = {"questions": str(spec.questions) if spec.questions else None,
            "labels": str(spec.labels) if spec.labels else None}
    make = {k: v for k, v in (("questions", spec.make_questions), ("paraphrases", spec.make_paraphrases),
                              ("labels", spec.make_labels)) if v is not None}
    return {
        "name": spec.name,
        "model": spec.model,
        "protocol": spec.protocol,
        "device": spec.device,
        "dtype": spec.dtype,
        "kernels": spec.kernels,
        "trust_remote_code": spec.trust_remote_code,
        "data": {**{k: v for k, v in data.items() if v}, **({"make": make} if make else {})},
        "train": spec.train,
        "evaluate": spec.evaluate,
        "grid": spec.grid,
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


def prepare_data(spec: SweepSpec, sweep_dir: Path) -> tuple[Path, Path]:
    """The questions file and label folder: given, or made inside ``SWEEP_DIR/data/`` (resumed if half done).
    Labels are made on this process's base model, which the local executor then reuses for every run."""
    from knowpack.kg import stage as questions_stage
    from knowpack.paraphrase import stage as paraphrase_stage
    from knowpack.probe import stage as label_stage

    questions_config, paraphrase_config, label_config = spec.data_configs(sweep_dir)
    questions = spec.questions
    if questions_config is not None:
        questions = questions_stage.run(questions_config).file("questions.parquet")
    if paraphrase_config is not None:
        loaded = base_model(spec.model, spec.device, spec.dtype, spec.trust_remote_code, spec.progress,
                            spec.kernels)
        questions = paraphrase_stage.run_loaded(loaded, paraphrase_config).file("questions.parquet")
    labels = spec.labels
    if label_config is not None:
        labels = label_config.out
        if not is_complete(labels):
            loaded = base_model(spec.model, spec.device, spec.dtype, spec.trust_remote_code, spec.progress,
                                spec.kernels)
            label_stage.run_loaded(loaded, label_config)
    assert questions is not None and labels is not None  # parse_sweep requires one source of each
    return Path(questions).resolve(), Path(labels).resolve()


def check_pools(spec: SweepSpec, runs: list[RunSpec], questions: Path, labels: Path) -> None:
    """Draw every run's facts now (cheap) so a grid asking for more facts than the pools hold fails before
    hours of training, naming the grid value, instead of failing run by run."""
    from knowpack.train.mixture import load_pool, packable_ids, restrict_pool, sample_facts
    from knowpack.train.stage import parse_extra

    pools = {None: load_pool(labels, questions)}  # by --pool: each pool file read once
    extra_pools: dict = {}
    packables: dict = {}
    seen = set()
    for run in runs:
        config = spec.train_config(run, labels=labels, questions=questions, out=Path("run"))
        draw = (config.unknown, run.params["mixture"], config.seed, config.extra_pool, config.pack_from,
                config.pool, config.pack_known)
        if draw in seen:
            continue
        seen.add(draw)
        if config.extra_pool is not None and config.extra_pool not in extra_pools:
            extra_pools[config.extra_pool] = load_pool(config.extra_pool)
        if config.pack_from not in packables:
            packables[config.pack_from] = packable_ids(config.pack_from)
        try:
            if config.pool not in pools:
                pools[config.pool] = restrict_pool(pools[None], config.pool)
            sample_facts(pools[config.pool], config.unknown,
                         [parse_extra(item) for item in config.extra], config.seed, allow_repeat=config.allow_repeat,
                         extra_pool=extra_pools.get(config.extra_pool), packable=packables[config.pack_from],
                         pack_known=config.pack_known)
        except InputError as err:
            hint = ("; add `data: make: paraphrases: {k: N}` to the sweep file to generate them first"
                    if "paraphrase" in str(err) and spec.make_paraphrases is None else "")
            raise InputError(
                f"grid: unknown={config.unknown} with mixture {run.params['mixture']} cannot be drawn: {err}{hint}"
            ) from err
