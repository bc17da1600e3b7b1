"""The inject command's work, step by step. Every model step is a stage writing its own folder inside DIR
(questions, label, paraphrase, train, evaluate), so an interrupted injection resumes stage by stage; the tables the
inject folder owns (``folder.py``) are written once, atomically, from the checked inputs.

1. the facts (checked row by row in :func:`read_inputs`, before any model loads) get their relation's template
   phrasings as paraphrases; the guard is sampled (stratified) from the embedded question set or ``--guard``;
2. facts + guard are labelled by the base model (SliCK, greedy as the study's code); the answers go to a response
   store shared by every injection, so a guard is labelled once per model and settings;
3. the facts the model does not know are packed (all of them with ``--keep-known``); known-fact candidates are
   labelled and the mixture chosen (``policy.py``); packed facts lacking paraphrases get model-written ones;
4. train (``--pool``: only the user's facts are packed) and evaluate at every epoch (``--shift-epochs all``);
5. the epoch is chosen, exported and reported (``outcome.py``, ``export.py``, ``report.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from knowpack.assets import cache_dir
from knowpack.errors import InputError
from knowpack.inject import folder as layout
from knowpack.inject.folder import InjectFolder
from knowpack.inject.stage import InjectConfig
from knowpack.kg.facts_file import read_facts
from knowpack.kg.folder import QUESTIONS_SCHEMA, questions_file, read_questions
from knowpack.runfolder import RunFolder, open_run, read_parquet, write_parquet

GUARD_SEED = 0  # the guard does not depend on the run's seed, so every injection on a model shares its labels
CPU_GUARD_SIZE = 200
CPU_PROMPTS, GPU_PROMPTS = 3, 10
# on a CPU a 5-shot MMLU question takes seconds: one subject, 20 questions (a smoke check, not a measurement)
CPU_BENCHMARKS = {"mmlu_subjects": ("high_school_geography",), "limit": 20}


def as_questions(table: pa.Table) -> pa.Table:
    return table.select(QUESTIONS_SCHEMA.names).cast(QUESTIONS_SCHEMA)


def shared_store() -> Path:
    """The response store every injection labels into (answers are keyed by model, settings and prompt text)."""
    return cache_dir() / "inject" / "responses"


@dataclass
class Inputs:
    facts: pa.Table
    skipped: list[tuple[int, str]]
    known: pa.Table | None = None
    known_skipped: list[tuple[int, str]] = field(default_factory=list)
    guard: pa.Table | None = None  # the user's guard questions; None: the embedded question set


def read_inputs(config: InjectConfig) -> Inputs:
    """Every input file checked: FACTS and --known row by row (``kg.facts_file``), --guard column by column."""
    facts = read_facts(config.facts, skip_bad_rows=config.skip_bad_rows)
    inputs = Inputs(facts.table, facts.skipped)
    if config.known is not None:
        known = read_facts(config.known, skip_bad_rows=config.skip_bad_rows)
        inputs.known, inputs.known_skipped = known.table, known.skipped
    if config.guard is not None:
        inputs.guard = read_questions(config.guard, required=tuple(QUESTIONS_SCHEMA.names))
        clash = set(inputs.guard.column("id").to_pylist()) & set(facts.table.column("id").to_pylist())
        if clash:
            raise InputError(f"{config.guard}: question id {sorted(clash)[0]!r} is also a fact's id in {config.facts}")
    return inputs


def machine_settings(config: InjectConfig, gpu: bool) -> dict[str, Any]:
    """The defaults that fit the machine, resolved: guard size, prompts, benchmark size (a given value wins)."""
    options = dict(config.options)
    if not gpu and not {"mmlu_subjects", "limit", "benchmarks"} & set(options):
        options.update(CPU_BENCHMARKS)
    return {
        "machine": "gpu" if gpu else "cpu",
        "guard_size": config.guard_size if config.guard_size is not None else (None if gpu else CPU_GUARD_SIZE),
        "prompts": config.prompts or (GPU_PROMPTS if gpu else CPU_PROMPTS),
        "options": options,
    }


def _open(config: InjectConfig, fingerprint: str, settings: dict[str, Any]) -> RunFolder:
    inputs = {"facts": config.facts}
    if config.guard is not None:
        inputs["guard"] = questions_file(config.guard)
    if config.known is not None:
        inputs["known"] = config.known
    return open_run(config.out, "inject", config, inputs, extra_key={"model": fingerprint, **settings},
                    overwrite=config.overwrite)


def inject(config: InjectConfig, inputs: Inputs) -> InjectFolder:
    """Load the model unless DIR already holds this injection, finished."""
    from knowpack.models import load_model, on_gpu, resolve_model

    _, fingerprint, _ = resolve_model(config.model, trust_remote_code=config.trust_remote_code)
    if _open(config, fingerprint, machine_settings(config, on_gpu(config.device))).complete:
        return InjectFolder(config.out)
    loaded = load_model(config.model, device=config.device, dtype=config.dtype, kernels=config.kernels,
                        trust_remote_code=config.trust_remote_code, progress=config.progress)
    return inject_loaded(loaded, config, inputs)


def inject_loaded(loaded, config: InjectConfig, inputs: Inputs) -> InjectFolder:
    from knowpack.inject.outcome import finish

    settings = machine_settings(config, loaded.device.type == "cuda")
    run = _open(config, loaded.fingerprint, settings)
    if run.complete:
        return InjectFolder(run.path)
    steps = Steps(loaded, config, inputs, run, settings)
    steps.label_base()
    steps.choose_packed()
    steps.choose_mixture()
    steps.paraphrase()
    steps.train()
    steps.evaluate()
    finish(steps)
    return InjectFolder(run.path)


class Steps:
    """The injection's stages in order; each reads what the earlier ones left in the folder."""

    def __init__(self, loaded, config: InjectConfig, inputs: Inputs, run: RunFolder, settings: dict[str, Any]):
        self.loaded, self.config, self.inputs, self.run, self.settings = loaded, config, inputs, run, settings
        self.path = run.path
        self.facts = self._facts()
        self.guard = self._guard()

    # -- tables the folder owns

    def _table(self, name: str, make) -> pa.Table:
        """A table of the folder: read when an earlier (interrupted) invocation wrote it, else made and written."""
        path = self.run.file(name)
        if not path.is_file():
            write_parquet(path, make(), schema=QUESTIONS_SCHEMA)
        return read_parquet(path)

    def _facts(self) -> pa.Table:
        from knowpack.inject.questions import with_template_paraphrases

        return self._table(layout.FACTS_FILE, lambda: with_template_paraphrases(self.inputs.facts)[0])

    def _guard(self) -> pa.Table:
        from knowpack.inject.questions import stratified_sample, without_questions

        source = self.inputs.guard if self.inputs.guard is not None else self.embedded()
        sample = stratified_sample(source, self.settings["guard_size"], GUARD_SEED)
        self.guard_source_size = source.num_rows
        return as_questions(without_questions(sample, self.inputs.facts))

    def embedded(self) -> pa.Table:
        """The embedded question set (the questions stage copies it from its cache)."""
        from knowpack.kg import stage as questions_stage

        folder = questions_stage.run(questions_stage.QuestionsConfig(out=self.run.file(layout.EMBEDDED_DIR),
                                                                     progress=self.config.progress))
        return read_questions(folder.path, required=tuple(QUESTIONS_SCHEMA.names))

    # -- stages

    def label(self, questions: str, out: str):
        from knowpack.probe import stage as label_stage

        config = label_stage.LabelConfig(
            questions=self.run.file(questions), out=self.run.file(out), model=self.loaded.spec,
            n_prompts=self.settings["prompts"], n_samples=0, contaminated="drop", store=shared_store(),
            device=self.config.device, dtype=self.config.dtype, progress=self.config.progress)
        return label_stage.run_loaded(self.loaded, config)[0]

    def label_base(self) -> None:
        self._table(layout.LABELLED_FILE, lambda: pa.concat_tables([as_questions(self.facts), self.guard]))
        self.base = self.label(layout.LABELLED_FILE, layout.LABELS_DIR)

    def choose_packed(self) -> None:
        from knowpack.inject.questions import facts_to_pack

        labels = self.base.labels(["question_id", "category"]).set_index("question_id")["category"]
        self.fact_categories = {qid: labels[qid] for qid in self.facts.column("id").to_pylist()}
        packed = facts_to_pack(self.facts, self.fact_categories, self.config.keep_known)
        if packed.num_rows == 0:
            raise InputError(f"{self.config.facts}: the model already knows all {self.facts.num_rows} facts (SliCK "
                             f"labels in {self.base.path}); pass --keep-known to pack them anyway")
        self.packed = self._table(layout.PACK_FILE, lambda: packed)

    def choose_mixture(self) -> None:
        from knowpack.inject.policy import choose_mixture
        from knowpack.train.stage import CATEGORY_OF_KIND, parse_extra

        given = self.config.extra
        needs_known = not given or any(parse_extra(item)[0] in CATEGORY_OF_KIND for item in given)
        self.known_labels = self.label_known() if needs_known else None
        available = 0
        if self.known_labels is not None:
            available = int((self.known_labels.labels(["category"])["category"] == "HighlyKnown").sum())
        candidates = (f"the facts of {self.config.known}" if self.config.known is not None
                      else "the embedded graph's questions of your facts' relations")
        self.mixture = choose_mixture(self.packed.num_rows, available, given, candidates)
        self.known_available = available

    def label_known(self):
        """Label the known-fact candidates (--known, or the embedded graph's questions of the facts' relations);
        None when there are none."""
        from knowpack.inject.questions import same_relation_candidates, without_questions

        def candidates() -> pa.Table:
            if self.inputs.known is not None:
                return without_questions(self.inputs.known, self.inputs.facts)
            guard_ids = set(self.guard.column("id").to_pylist())
            return same_relation_candidates(self.embedded(), self.packed, guard_ids, self.config.seed)

        path = self.run.file(layout.KNOWN_FILE)
        if not path.is_file():
            table = candidates()
            if table.num_rows == 0:
                return None
            write_parquet(path, table, schema=QUESTIONS_SCHEMA)
        return self.label(layout.KNOWN_FILE, layout.KNOWN_LABELS_DIR)

    def paraphrase(self) -> None:
        """Packed facts with fewer paraphrases than the mixture and the held-out test need get model-written ones
        (the paraphrase stage, asked for the largest shortfall; each fact keeps what it lacked)."""
        from knowpack.inject.policy import fit_paraphrases
        from knowpack.paraphrase import stage as paraphrase_stage

        wanted = self.mixture.per_fact("paraphrase") + self.config.heldout_paraphrases
        rows = {row["id"]: row for row in self.packed.to_pylist()}
        short = {qid: wanted - len(row["paraphrases"]) for qid, row in rows.items() if len(row["paraphrases"]) < wanted}
        new: dict[str, list[str]] = {}
        if short:
            self._table(layout.PARAPHRASE_INPUT_FILE,
                        lambda: pa.Table.from_pylist([rows[q] for q in sorted(short)], schema=QUESTIONS_SCHEMA))
            config = paraphrase_stage.ParaphraseConfig(
                questions=self.run.file(layout.PARAPHRASE_INPUT_FILE), out=self.run.file(layout.PARAPHRASES_DIR),
                model=self.loaded.spec, k=max(short.values()), device=self.config.device,
                progress=self.config.progress)
            made = read_parquet(paraphrase_stage.run_loaded(self.loaded, config).file("questions.parquet")).to_pylist()
            new = {row["id"]: row["paraphrases"][len(rows[row["id"]]["paraphrases"]):][: short[row["id"]]]
                   for row in made}

        def questions() -> pa.Table:
            table = read_parquet(self.run.file(layout.LABELLED_FILE)).to_pylist()
            for row in table:
                row["paraphrases"] = row["paraphrases"] + new.get(row["id"], [])
            return pa.Table.from_pylist(table, schema=QUESTIONS_SCHEMA)

        table = self._table(layout.QUESTIONS_FILE, questions)
        counts = dict(zip(table.column("id").to_pylist(), (len(p) for p in table.column("paraphrases").to_pylist())))
        self.paraphrase_counts = {qid: counts[qid] for qid in rows}
        self.generated = sum(len(p) for p in new.values())
        self.mixture = fit_paraphrases(self.mixture, self.paraphrase_counts)

    def train(self) -> None:
        from knowpack.train import stage as train_stage

        config = self.config
        self.train_config = train_stage.TrainConfig(
            labels=self.base.path, questions=self.run.file(layout.QUESTIONS_FILE), out=self.run.file(layout.RUN_DIR),
            model=self.loaded.spec, pool=self.run.file(layout.PACK_FILE), pack_known=config.keep_known,
            unknown=self.packed.num_rows, extra=tuple(self.mixture.extra), allow_repeat=True,
            extra_pool=self.known_labels.path if self.known_labels is not None else None, seed=config.seed,
            rank=config.rank, alpha=config.alpha, lr=config.lr, epochs=config.epochs, batch_size=config.batch_size,
            targets=config.targets, device=config.device, dtype=config.dtype, progress=config.progress)
        self.training = train_stage.run_loaded(self.loaded, self.train_config)

    def evaluate(self) -> None:
        from knowpack.evaluate import stage as evaluate_stage

        config = evaluate_stage.EvaluateConfig(
            run=self.training.path, shift_epochs="all", heldout_paraphrases=self.config.heldout_paraphrases,
            device=self.config.device, dtype=self.config.dtype, progress=self.config.progress,
            options=self.settings["options"])
        self.evaluation = evaluate_stage.run_loaded(self.loaded, config)
