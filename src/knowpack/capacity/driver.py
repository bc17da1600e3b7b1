"""Running a capacity search: the facts and their labels, then rounds of sweeps until every search is done.

One search per (method, rank, seed) walks its path over the number of facts (``search.py``). A round asks every
unfinished search for its next size and runs all of them as one sweep (``sweep/driver.py``: resumable, local or
on Ray) in ``CAPACITY_DIR/sweep``. That sweep is the union of one grid per search — its sizes so far — so it
grows from round to round in place, keeps every run it ever did, and can be reported like any other
(``knowpack report CAPACITY_DIR/sweep``). Every search packs the same facts: a run's facts are drawn with its seed
from one pool, and a smaller run's facts are a subset of a larger run's.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowpack.capacity.folder import Capacity
from knowpack.capacity.search import Walk, walk
from knowpack.capacity.stage import CapacityConfig
from knowpack.errors import InputError
from knowpack.protocols import STUDY_SEEDS
from knowpack.evaluate.folder import EVAL_DIR
from knowpack.runfolder import MANIFEST, exclusive, is_complete, open_run, read_manifest, write_json, write_parquet
from knowpack.sweep.spec import SweepSpec, canonical_mixture, run_id

SWEEP_DIR, DATA_DIR = "sweep", "data"


@dataclass(frozen=True, order=True)
class Search:
    """One search: a method, a rank (0 for full fine-tuning, which has none) and a seed."""

    method: str
    rank: int
    seed: int


def seeds(count: int) -> list[int]:
    """The study's three seeds first, then 1, 2, …"""
    return [*STUDY_SEEDS, *range(1, count)][:count]


def searches_of(config: CapacityConfig) -> list[Search]:
    return [Search(method, 0 if method == "full" else rank, seed)
            for method in config.methods for rank in (config.ranks if method != "full" else (0,))
            for seed in seeds(config.seeds)]


def run_capacity(config: CapacityConfig) -> Capacity:
    with exclusive(config.out):
        return _run_capacity(config)


def _run_capacity(config: CapacityConfig) -> Capacity:
    from knowpack.capacity.results import write_results

    inputs = {name: path for name, path in (("labels", config.labels), ("facts", config.facts)) if path}
    folder = open_run(config.out, "capacity", config, inputs, overwrite=config.overwrite)
    folder.note(complete=False, search={"reliability": config.reliability,
                                        "max_negative_shift": config.max_negative_shift,
                                        "max_benchmark_drop": config.max_benchmark_drop, "ranks": config.ranks,
                                        "methods": config.methods, "seeds": seeds(config.seeds),
                                        "start": config.start, "max_facts": config.max_facts,
                                        "tolerance": config.tolerance})
    questions, labels, pack_from = prepare_facts(config, folder.path)
    sweep = CapacitySweep(config, questions, labels, pack_from, folder.path / SWEEP_DIR)
    stop = min(config.max_facts, sweep.pool_size)
    walks = search_all(searches_of(config), sweep.outcome, sweep.run, config.start, stop, config.tolerance)
    sweep.run(walks)  # the index lists every run of the finished searches (nothing is trained)
    return write_results(config, folder, sweep, walks, stop)


def search_all(searches: list[Search], outcome, run_round, start: int, stop: int, tolerance: float
               ) -> dict[Search, Walk]:
    """Walk every search until all are done; each round runs the next size of every unfinished search together
    (``run_round(walks)``), so the executor can spread them. ``outcome(search, n)``: see :func:`walk`."""
    rounds = 0
    while True:
        walks = {search: walk(lambda n, s=search: outcome(s, n), start, stop, tolerance) for search in searches}
        todo = {search: state.next for search, state in walks.items() if not state.done}
        if not todo:
            return walks
        rounds += 1
        print(f"knowpack capacity: round {rounds}: " + ", ".join(f"{describe(s)} n={n}" for s, n in todo.items()),
              file=sys.stderr, flush=True)
        run_round(walks)
        if all(outcome(search, size) is None for search, size in todo.items()):
            raise RuntimeError("a capacity round finished without an outcome for any size it ran")


def describe(search: Search) -> str:
    return search.method if search.method == "full" else f"{search.method} r{search.rank}" + (
        f" s{search.seed}" if search.seed != STUDY_SEEDS[0] else "")


# ---------------------------------------------------------------- the facts


def prepare_facts(config: CapacityConfig, out: Path) -> tuple[Path, Path, Path | None]:
    """(questions file, label folder, the question set whose Unknown facts alone are packed or None).

    ``--labels``: that folder and its questions. Otherwise the embedded question set (``knowpack questions``),
    with ``--facts`` the user's facts added to it, labelled here (``knowpack label``) on the loaded base model."""
    from knowpack.probe.folder import LabelFolder

    if config.labels is not None:
        return LabelFolder(config.labels).questions_path, Path(config.labels), None
    from knowpack.kg import stage as questions_stage

    data = out / DATA_DIR
    guard = questions_stage.run(questions_stage.QuestionsConfig(out=data / "questions", per_bucket=config.per_bucket,
                                                                progress=config.progress))
    questions, pack_from = guard.file("questions.parquet"), None
    if config.facts is not None:
        questions, pack_from = with_facts(config.facts, questions, data)
    labels = data / "labels"
    if not is_complete(labels):
        from knowpack.probe import stage as label_stage
        from knowpack.sweep.runs import base_model

        loaded = base_model(config.model, config.device, config.dtype, config.trust_remote_code, config.progress,
                            config.kernels)
        label_stage.run_loaded(loaded, label_stage.LabelConfig(
            questions=questions, out=labels, model=config.model, n_prompts=config.n_prompts,
            n_samples=config.n_samples, progress=config.progress))
    return questions.resolve(), labels.resolve(), pack_from


def with_facts(facts: Path, guard: Path, data: Path) -> tuple[Path, Path]:
    """The user's facts (``facts.parquet``) and the question set made of them and the guard questions
    (``questions.parquet``), written into ``data``."""
    import pyarrow as pa

    from knowpack.kg.facts_file import read_facts
    from knowpack.kg.folder import read_questions

    mine = read_facts(facts).table
    theirs = read_questions(guard)
    shared = sorted(set(mine.column("id").to_pylist()) & set(theirs.column("id").to_pylist()))
    if shared:
        raise InputError(f"{facts}: id {shared[0]!r} is also a question of the embedded set; give your facts other "
                         "ids (or none: knowpack makes them from the question)")
    facts_file, questions_file = data / "facts.parquet", data / "questions.parquet"
    write_parquet(facts_file, mine)
    write_parquet(questions_file, pa.concat_tables([mine, theirs.select(mine.column_names).cast(mine.schema)]))
    return questions_file.resolve(), facts_file.resolve()


# ---------------------------------------------------------------- the sweep behind the searches


class CapacitySweep:
    """The sweep of a capacity folder: which run a (search, size) is, and what it found."""

    def __init__(self, config: CapacityConfig, questions: Path, labels: Path, pack_from: Path | None, out: Path):
        from knowpack.train.mixture import UNKNOWN, load_pool, packable_ids

        self.config, self.questions, self.labels, self.out = config, questions, labels, out
        self.mixture = canonical_mixture(list(config.extra)) if config.extra else "none"
        self.rates = config.learning_rates()
        train: dict[str, Any] = {"epochs": config.epochs, "batch_size": config.batch_size, "targets": config.targets}
        if pack_from is not None:
            train["pack_from"] = str(pack_from)
        # the constraints read the last epoch alone; all questions are relabelled only where the facts were learnt
        evaluate: dict[str, Any] = {"shift_epochs": "last", "reliability_epochs": "last", "heldout_paraphrases": 0,
                                    "damage_if_reliability": None if config.damage_of_every_run else config.reliability,
                                    "benchmarks": ["mmlu"] if config.max_benchmark_drop is not None else []}
        if config.max_benchmark_drop is not None and config.benchmark_limit is not None:
            evaluate["limit"] = config.benchmark_limit
        self.spec = SweepSpec(name="capacity", model=config.model, out=out, grid=[], questions=questions,
                              labels=labels, train=train, evaluate=evaluate, device=config.device,
                              dtype=config.dtype, kernels=config.kernels, trust_remote_code=config.trust_remote_code,
                              progress=config.progress)
        pool = load_pool(labels, questions)
        unknown = pool[pool["category"] == UNKNOWN]
        packable = packable_ids(pack_from)
        self.pool = unknown if packable is None else unknown[unknown["question_id"].isin(packable)]
        self.known: dict[tuple[Search, int], bool] = {}  # outcomes of evaluated runs (they never change)
        if self.pool.empty:
            raise InputError(f"{labels}: no Unknown fact to pack (the model knows every "
                             f"{'one of your facts' if packable is not None else 'question'})")

    @property
    def pool_size(self) -> int:
        return len(self.pool)

    def params(self, search: Search, size: int) -> dict[str, Any]:
        """A run's grid values, as the sweep expands them."""
        rank = search.rank or 1  # full fine-tuning has no rank: TrainConfig's default, unused
        return {"unknown": size, "mixture": self.mixture, "method": search.method, "rank": rank,
                "alpha": self.config.alpha_per_rank * rank, "lr": self.rates[search.method], "seed": search.seed}

    def run_dir(self, search: Search, size: int) -> Path:
        return self.out / "runs" / run_id(self.spec, self.params(search, size))

    def outcome(self, search: Search, size: int) -> bool | None:
        """Whether the run of ``size`` facts met every constraint; None while it is not evaluated."""
        from knowpack.capacity.results import read_point

        if (search, size) not in self.known:
            point = read_point(self.run_dir(search, size), self.config)
            if point is None:
                return None
            self.known[(search, size)] = point["passed"]
        return self.known[(search, size)]

    def grids(self, walks: dict[Search, Walk]) -> list[dict[str, list[Any]]]:
        grids = []
        for search, state in sorted(walks.items()):
            sizes = sorted({*state.tried})
            fixed = self.params(search, 0)
            grids.append({"unknown": sizes, **{("mixtures" if k == "mixture" else k): [v]
                                               for k, v in fixed.items() if k != "unknown"}})
        return grids

    def run(self, walks: dict[Search, Walk]):
        """Run (or resume) the sweep of every size the searches have looked at, the next ones included."""
        from knowpack.sweep.driver import run_sweep
        from knowpack.sweep.executors import EXECUTORS

        for search, state in walks.items():
            for size in state.tried:
                if self.outcome(search, size) is None:
                    reopen_for_damage(self.run_dir(search, size) / EVAL_DIR)
        executor_class = EXECUTORS[self.config.executor]
        options = self.config.options_of(executor_class.Options) if executor_class.Options else None
        return run_sweep(dataclasses.replace(self.spec, grid=self.grids(walks)), executor_class(options))


def reopen_for_damage(eval_dir: Path) -> None:
    """Mark a complete evaluation that skipped the damage as unfinished, so the sweep evaluates the run again:
    its packed facts' labels are kept, all questions are labelled (the bound it was made under was higher)."""
    if is_complete(eval_dir):
        manifest = read_manifest(eval_dir)
        write_json(eval_dir / MANIFEST, {**manifest, "complete": False})
