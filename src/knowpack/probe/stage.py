"""The label stage: SliCK knowledge categories of every question for a model and any number of its adapters.

Per question and prompt set (n_prompts, SliCK: 10): one greedy answer and ``n_samples`` answers at
``temperature`` (SliCK: 16 at 0.5). Categories: HighlyKnown = greedy right under every prompt; MaybeKnown = under
some; WeaklyKnown = greedy never, a sample sometimes; Unknown = never. "Right" is ``knowpack.text.match_lenient``
(the study's containment rule, on word boundaries) or ``match_strict``; both are stored.

``run(config)`` loads the model and labels one target; ``run_loaded(loaded, config, targets)`` labels several
targets (the base model and/or adapters of it) in one pass over the questions, so an epoch sweep is labelled
without reloading the base model. Each target gets its own label folder; raw generations go to a response store
(``OUT/store`` unless ``store`` names a shared one) from which an interrupted run resumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from knowpack.cli import Command
from knowpack.config import (Config, device_option, dtype_option, kernels_option, model_option, option, out_option,
                             overwrite_option, progress_option, trust_remote_code_option)
from knowpack.errors import InputError
from knowpack.kg.folder import questions_file, read_questions
from knowpack.probe.backends import BACKENDS, Decoding
from knowpack.probe.prompts import POLICIES
from knowpack.text import normalized_aliases


@dataclass
class LabelConfig(Config):
    """Settings of a labelling run. Adapter and questions enter the run key through their fingerprints (adapter
    file sha256, questions file sha256), not their paths; the model through its spec and weights fingerprint."""

    protocol_stage = "label"

    questions: Path = option(help="questions.parquet or a question set folder", metavar="QUESTIONS",
                             affects_results=False)
    out: Path = out_option("label folder to write (or resume)")
    model: str = model_option()
    adapter: Path | None = option(None, help="LoRA adapter folder trained on --model (or an epoch folder of a "
                                  "full fine-tune of it)", metavar="DIR",
                                  affects_results=False)
    n_prompts: int = option(10, help="few-shot prompt sets per question", minimum=1)
    shots: int = option(4, help="exemplars per prompt", minimum=0)
    exemplars: str = option("pool", choices=POLICIES,
                            help="pool: the fixed exemplar pool (the study); same-relation: other questions of the "
                            "relation (SliCK)")
    exemplar_seed: int = option(0, help="seeds the same-relation exemplar draw")
    contaminated: str = option("refuse", choices=("refuse", "drop"), affects_results=False,
                               help="a pool exemplar that asks a question being labelled (same text, or same subject "
                               "and answer): refuse to label, or drop it and use the next pool exemplars")
    drop_exemplars: tuple[int, ...] = option((), split=",", minimum=0, metavar="INDICES",
                                             help="pool exemplars to leave out, by index (--contaminated drop adds "
                                             "the contaminated ones; recorded so evaluation reuses the same prompts)")
    n_samples: int = option(16, help="sampled answers per prompt (0: greedy only)", flag="--samples", minimum=0)
    temperature: float = option(0.5, help="sampling temperature", above=0)
    sample_seed: int = option(0, help="seeds the samples (each answer has its own stream)")
    chat: bool | None = option(None, help="use the chat template (default: when the model has one)")
    max_new_tokens: int = option(24, help="answer length limit in tokens", minimum=1)
    stop_at_newline: bool = option(True, help="end an answer at its first newline (it always ends at "
                                   "end-of-sequence/turn)")
    backend: str = option("prefix", choices=BACKENDS.names, help="generation backend")
    dtype: str | None = dtype_option()
    kernels: str = kernels_option()
    device: str | None = device_option()
    trust_remote_code: bool = trust_remote_code_option()
    batch_size: int | None = option(None, help="generated sequences per batch (default: 64 on a CPU; on a GPU sized "
                                    "from the model and the free memory, and printed)", minimum=1,
                                    affects_results=False)
    chunk_rows: int = option(20_000, help="generations kept in memory before a store chunk is written (a crash "
                             "loses at most these)", minimum=1, affects_results=False)
    store: Path | None = option(None, help="shared response store folder (default: OUT/store)", metavar="DIR",
                                affects_results=False)
    overwrite: bool = overwrite_option()
    progress: bool = progress_option()

    def decoding(self) -> Decoding:
        return Decoding(self.max_new_tokens, self.n_samples, self.temperature, self.stop_at_newline)


@dataclass(frozen=True)
class LabelTarget:
    """One thing to label with the loaded base model: the base itself (adapter None) or a LoRA adapter folder."""

    out: Path
    adapter: Path | None = None


@dataclass
class Questions:
    ids: list[str]
    questions: list[str]
    aliases: list[list[str]]
    relations: list[str] | None
    answers: list[str] | None
    subjects: list[str] | None = None
    paraphrases: list[list[str]] | None = None


def read_probe_questions(path: Path, exemplars: str) -> Questions:
    """The questions to label, checked by type (``kg.folder``) and for a usable answer alias."""
    need_relations = exemplars == "same-relation"
    table = read_questions(path, required=("id", "question", "aliases") + (("relation", "answer") if need_relations else ()))
    cols = table.select(["id", "question", "aliases"] + (["relation", "answer"] if need_relations else [])).to_pydict()
    source = questions_file(path)
    for qid, aliases, answer in zip(cols["id"], cols["aliases"], cols.get("answer", cols["id"])):
        if not normalized_aliases(aliases):
            raise InputError(f"{source}: question {qid!r} has no non-empty answer alias")
        if need_relations and not answer.strip():
            raise InputError(f"{source}: question {qid!r} has an empty answer")
    extra = {c: table.column(c).to_pylist() for c in ("subject", "paraphrases") if c in table.column_names}
    return Questions(cols["id"], cols["question"], cols["aliases"], cols.get("relation"), cols.get("answer"),
                     extra.get("subject"), extra.get("paraphrases"))


def exemplars_to_drop(config: LabelConfig, questions: Questions) -> tuple[int, ...]:
    """The pool exemplars to leave out: ``drop_exemplars`` plus, with ``contaminated: drop``, every exemplar the
    prompts would use that gives a labelled question away (dropping one brings later ones into use, so this
    repeats until the used ones are clean). With ``contaminated: refuse`` a collision is a one-line error."""
    from knowpack.probe.prompts import PromptSettings, contaminated_exemplars, exemplar_pool

    found = contaminated_exemplars(questions.questions, questions.ids, questions.aliases, questions.subjects,
                                   questions.paraphrases)
    dropped = set(config.drop_exemplars)
    while True:
        used = [i for i in range(len(exemplar_pool())) if i not in dropped][: config.n_prompts * config.shots]
        bad = [i for i in used if i in found]
        if not bad:
            return tuple(sorted(dropped))
        if config.contaminated == "refuse":
            exemplar = exemplar_pool()[bad[0]]
            raise InputError(f"{questions_file(config.questions)}: few-shot exemplar {bad[0]} ({exemplar.question!r} "
                             f"→ {exemplar.answer!r}) gives away question {found[bad[0]]!r}; pass --contaminated drop "
                             "to leave such exemplars out")
        dropped.update(bad)
        PromptSettings(config.n_prompts, config.shots, excluded=tuple(dropped)).validate()  # pool not exhausted


def run(config: LabelConfig):
    """Label the questions with ``config.model`` (and ``config.adapter``); returns the label folder."""
    exemplars_to_drop(config, read_probe_questions(config.questions, config.exemplars))  # fail before a load
    from knowpack.models import load_model

    loaded = load_model(config.model, device=config.device, dtype=config.dtype, kernels=config.kernels,
                        trust_remote_code=config.trust_remote_code, progress=config.progress)
    return run_loaded(loaded, config)[0]


def run_loaded(loaded, config: LabelConfig, targets: Sequence[LabelTarget] | None = None):
    """Label several targets of one loaded base model in one pass; returns their label folders (in order).

    ``config.model`` is ignored here (the model is ``loaded``); ``targets`` default to ``config.out`` with
    ``config.adapter``. Complete folders are skipped; incomplete ones resume from the store."""
    from knowpack.probe.label import label_targets

    targets = list(targets) if targets is not None else [LabelTarget(Path(config.out), config.adapter)]
    return label_targets(loaded, config, targets)


def main(config: LabelConfig) -> None:
    print(run(config).path)


COMMANDS = [Command("label", LabelConfig, main,
                    help="label questions HighlyKnown / MaybeKnown / WeaklyKnown / Unknown (SliCK) with a model",
                    description="Ask every question under n few-shot prompts (greedy + samples), store every answer, "
                    "and write responses.parquet and labels.parquet into --out. Interrupted runs resume.")]
