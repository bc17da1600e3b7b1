"""One sweep run on a loaded base model (train, then evaluate), its status on disk, and the sweep index.

Executors only decide *where* a run happens; what a run is lives here, so a run done by the local executor and one
done by a Ray actor leave identical folders. A run's state is read from its run folders' manifests, never from
memory: a run is done only when both its training folder and its ``eval/`` folder are complete.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from knowpack.errors import KnowpackError
from knowpack.evaluate.folder import EVAL_DIR
from knowpack.runfolder import is_complete, read_manifest, write_bytes, write_parquet
from knowpack.sweep.spec import RunSpec, SweepSpec, grid_parameters
from knowpack.train.folder import EPOCHS_DIR

# Status of a run in sweep.parquet.
DONE, TRAINED, PARTIAL, PENDING, FAILED = "done", "trained", "partial", "pending", "failed"
ARROW_TYPES = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}
STATUS_FIELDS = [
    pa.field("status", pa.string()),
    pa.field("epochs_done", pa.int64()),
    pa.field("run_dir", pa.string()),
    pa.field("eval_dir", pa.string()),
    pa.field("seconds", pa.float64()),
    pa.field("error", pa.string()),
]


@dataclass(frozen=True)
class SweepJob:
    """What every worker needs to do runs: the sweep, the model to load, where data and outputs live (picklable)."""

    out: Path
    spec: SweepSpec
    questions: Path
    labels: Path

    @property
    def model(self) -> str:
        return self.spec.model

    @property
    def device(self) -> str | None:
        return self.spec.device

    @property
    def dtype(self) -> str | None:
        return self.spec.dtype

    @property
    def trust_remote_code(self) -> bool:
        return self.spec.trust_remote_code

    def run_dir(self, run: RunSpec) -> Path:
        return self.out / "runs" / run.run_id

    def load_model(self):
        return base_model(self.model, self.device, self.dtype, self.trust_remote_code, self.spec.progress,
                          self.spec.kernels)

    def train_config(self, run: RunSpec):
        return self.spec.train_config(run, labels=self.labels, questions=self.questions, out=self.run_dir(run))


_BASE_MODELS: dict[tuple, object] = {}


def base_model(model: str, device: str | None, dtype: str | None, trust_remote_code: bool, progress: bool = True,
               kernels: str = "auto"):
    """The base model, loaded at most once per process: labelling the sweep's data and every local run share it."""
    key = (model, device, dtype, trust_remote_code, kernels)
    if key not in _BASE_MODELS:
        from knowpack.models import load_model

        _BASE_MODELS[key] = load_model(model, device=device, dtype=dtype, kernels=kernels,
                                       trust_remote_code=trust_remote_code, progress=progress)
    return _BASE_MODELS[key]


def release_base_models() -> None:
    """Drop this process's base models (the Ray driver does, so its copy does not hold a GPU the actors need)."""
    _BASE_MODELS.clear()
    import gc

    gc.collect()


@dataclass(frozen=True)
class RunResult:
    run_id: str
    status: str
    seconds: float
    error: str = ""


def execute_run(loaded, job: SweepJob, run: RunSpec, trained_seconds: float = 0.0) -> RunResult:
    """Train (resuming from the last complete epoch if the folder holds a half-finished run), then evaluate.

    Any failure is caught and returned, so one bad run does not stop a sweep of many; its traceback goes to
    ``SWEEP_DIR/logs/<run_id>.log``. ``trained_seconds``: time already spent training it in a group.
    """
    from knowpack.evaluate import stage as evaluate
    from knowpack.train import stage as train

    started = time.monotonic() - trained_seconds
    run_dir = job.run_dir(run)
    try:
        train.run_loaded(loaded, job.train_config(run))
        evaluate.run_loaded(loaded, job.spec.evaluate_config(run, run_dir))
    except Exception as err:  # noqa: BLE001 - recorded per run; the sweep goes on with the others
        return failed_run(job, run, err, time.monotonic() - started)
    return RunResult(run.run_id, run_state(run_dir)[0], time.monotonic() - started)


def execute_group(loaded, job: SweepJob, runs: list[RunSpec], record) -> None:
    """Train ``runs`` together in one pass over the base model (``train.grouped``), then evaluate each one;
    ``record`` gets each run's result as it ends."""
    from knowpack.train.grouped import train_group

    started = time.monotonic()
    try:
        trained = train_group(loaded, [job.train_config(run) for run in runs])
    except Exception as err:  # noqa: BLE001 - the whole group failed; recorded per run
        trained = [err] * len(runs)
    share = (time.monotonic() - started) / len(runs)
    for run, outcome in zip(runs, trained, strict=True):
        record(failed_run(job, run, outcome, share) if isinstance(outcome, Exception)
               else execute_run(loaded, job, run, trained_seconds=share))


def training_groups(job: SweepJob, runs: list[RunSpec], together: int | None, loaded) -> list[list[RunSpec]]:
    """The runs in groups that train together: runs that can share a pass (same targets and packing), of
    similar size (sorted by rows, so a group's runs end their epochs at about the same step), at most
    ``together`` a group — by default as many as fill ``GROUP_ROWS`` rows a step on a GPU, one on a CPU."""
    from knowpack.train.grouped import GROUP_ROWS, auto_group_size, group_key, groupable

    configs = {run.run_id: job.train_config(run) for run in runs}
    if together == 1 or (together is None and auto_group_size(loaded, 1) == 1):
        return [[run] for run in runs]
    alone = [[run] for run in runs if not groupable(configs[run.run_id])]
    shared = sorted((run for run in runs if groupable(configs[run.run_id])),
                    key=lambda run: (group_key(configs[run.run_id]), run_rows(configs[run.run_id])))
    groups: list[list[RunSpec]] = []
    for run in shared:
        config = configs[run.run_id]
        current = groups[-1] if groups else None
        fits = current is not None and group_key(configs[current[0].run_id]) == group_key(config) and (
            len(current) < together if together else
            sum(configs[r.run_id].batch_size for r in current) + config.batch_size <= GROUP_ROWS)
        if fits:
            current.append(run)
        else:
            groups.append([run])
    return groups + alone


def run_rows(config) -> int:
    """Rows a run trains on: its Unknown facts and their extra items."""
    from knowpack.train.stage import parse_extra

    return config.unknown * (1 + sum(parse_extra(item)[1] for item in config.extra))


def failed_run(job: SweepJob, run: RunSpec, err: BaseException, seconds: float) -> RunResult:
    """A failed run's result, its traceback in ``SWEEP_DIR/logs/<run_id>.log``."""
    log = job.out / "logs" / f"{run.run_id}.log"
    write_bytes(log, "".join(traceback.format_exception(err)).encode())
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if not isinstance(err, KnowpackError):
        message = f"{type(err).__name__}: {message} (traceback in logs/{run.run_id}.log)"
    return RunResult(run.run_id, FAILED, seconds, message[:500])


def run_state(run_dir: Path) -> tuple[str, int]:
    """(status, complete epochs) of a run folder as its manifests say."""
    try:
        train = read_manifest(run_dir)
    except KnowpackError:
        return PENDING, 0
    epochs = len([p for p in (run_dir / EPOCHS_DIR).glob("epoch_*") if p.is_dir()])
    if not train.get("complete"):
        return PARTIAL, epochs
    return (DONE if is_complete(run_dir / EVAL_DIR) else TRAINED), epochs


class SweepIndex:
    """``sweep.parquet``: one row per run (id, grid values, status, paths), rewritten atomically on each change."""

    def __init__(self, job: SweepJob, runs: list[RunSpec], previous: dict[str, RunResult] | None = None):
        self.path = job.out / "sweep.parquet"
        self.job = job
        self.runs = runs
        self.results: dict[str, RunResult] = dict(previous or {})
        params = list(runs[0].params) if runs else ["unknown", "mixture"]
        kinds = {**grid_parameters(), "mixture": str}
        self.schema = pa.schema(
            [pa.field("run_id", pa.string())] + [pa.field(p, ARROW_TYPES[kinds[p]]) for p in params] + STATUS_FIELDS
        )

    def record(self, result: RunResult) -> None:
        self.results[result.run_id] = result
        self.write()

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for run in self.runs:
            run_dir = self.job.run_dir(run)
            status, epochs = run_state(run_dir)
            result = self.results.get(run.run_id)
            failed = result is not None and result.status == FAILED and status != DONE
            rows.append(
                {
                    "run_id": run.run_id,
                    **run.params,
                    "status": FAILED if failed else status,
                    "epochs_done": epochs,
                    "run_dir": str(run_dir.relative_to(self.job.out)),
                    "eval_dir": str((run_dir / EVAL_DIR).relative_to(self.job.out)),
                    "seconds": result.seconds if result else None,
                    "error": result.error if failed else "",
                }
            )
        return rows

    def write(self) -> list[dict[str, Any]]:
        rows = self.rows()
        write_parquet(self.path, pa.Table.from_pylist(rows, schema=self.schema))
        return rows
