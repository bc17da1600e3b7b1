"""``knowpack questions`` and ``knowpack paraphrase``: arguments → config → stage, then a summary."""

from __future__ import annotations

import argparse
from collections import Counter

from rich.console import Console
from rich.table import Table

from knowpack.kg.paraphrase import DEFAULT_PROMPT, ParaphraseConfig, paraphrase_questions
from knowpack.kg.questions import DEFAULT_PER_BUCKET, QuestionsConfig, build_questions, read_summary
from knowpack.kg.schema import BUCKETS


def register(subparsers: argparse._SubParsersAction) -> None:
    questions = subparsers.add_parser(
        "questions", help="build questions.parquet from the embedded fact graph or a DBpedia dump",
        description="Facts → questions with head/torso/tail popularity buckets (head-to-tail method).")
    questions.add_argument("--source", choices=("embedded", "dbpedia"), default="embedded")
    questions.add_argument("--dump", help="DBpedia mappingbased-objects dump (.ttl/.nt, plain, .bz2 or .gz)")
    questions.add_argument("--labels", action="append", default=[], metavar="FILE",
                           help="labels dump(s) for subject and answer names and aliases (repeatable)")
    questions.add_argument("--redirects", action="append", default=[], metavar="FILE",
                           help="redirects dump(s): redirect titles become answer aliases (repeatable)")
    questions.add_argument("--ontology", help="DBpedia ontology as N-Triples, for rdfs:domain/range")
    questions.add_argument("--templates", metavar="FILE", help="your own templates (YAML/JSON: relation -> phrasings)")
    questions.add_argument("--seed", type=int, default=0)
    questions.add_argument("--per-bucket", type=int, default=None,
                           help="facts per relation and bucket at most (default: "
                                + ", ".join(f"{k} {v}" for k, v in DEFAULT_PER_BUCKET.items()) + ")")
    questions.add_argument("--no-balance", dest="balance", action="store_false",
                           help="do not cut every bucket of a relation to its smallest bucket's count")
    questions.add_argument("--max-aliases", type=int, default=20)
    questions.add_argument("--strict", action="store_true", help="stop at the first malformed line")
    questions.add_argument("--max-bad-lines", type=int, default=1000,
                           help="malformed lines tolerated before giving up (default 1000)")
    questions.add_argument("--out", required=True, help="run folder to write")
    questions.add_argument("--overwrite", action="store_true")
    questions.add_argument("--no-progress", dest="progress", action="store_false")
    questions.set_defaults(func=_questions)

    paraphrase = subparsers.add_parser(
        "paraphrase", help="add k model-written paraphrases to each question",
        description="Sample paraphrases with a model; keep new, answer-free ones.")
    paraphrase.add_argument("--questions", required=True,
                            help="questions.parquet, a questions run folder, a .jsonl or a .txt (one per line)")
    paraphrase.add_argument("--out", required=True)
    paraphrase.add_argument("--model", default="smollm2-135m")
    paraphrase.add_argument("-k", type=int, default=5, help="paraphrases per question")
    paraphrase.add_argument("--rounds", type=int, default=3, help="sampling rounds before giving up on k")
    paraphrase.add_argument("--samples-per-round", type=int, default=8)
    paraphrase.add_argument("--temperature", type=float, default=1.0)
    paraphrase.add_argument("--top-p", type=float, default=0.95)
    paraphrase.add_argument("--max-new-tokens", type=int, default=48)
    paraphrase.add_argument("--prompt", default=DEFAULT_PROMPT, help="rephrase prompt with {question}")
    paraphrase.add_argument("--seed", type=int, default=0)
    paraphrase.add_argument("--replace", dest="keep_existing", action="store_false",
                            help="drop the template paraphrases instead of adding to them")
    paraphrase.add_argument("--device")
    paraphrase.add_argument("--trust-remote-code", action="store_true", help="run Python code shipped with a hub model (off by default: it runs with your rights)")
    paraphrase.add_argument("--overwrite", action="store_true")
    paraphrase.add_argument("--no-progress", dest="progress", action="store_false")
    paraphrase.set_defaults(func=_paraphrase)


def _questions(args: argparse.Namespace) -> None:
    config = QuestionsConfig(
        out=args.out, source=args.source, dump=args.dump, labels=tuple(args.labels), redirects=tuple(args.redirects),
        ontology=args.ontology, templates=args.templates, seed=args.seed, per_bucket=args.per_bucket,
        balance=args.balance, max_aliases=args.max_aliases, strict=args.strict, max_bad_lines=args.max_bad_lines,
        overwrite=args.overwrite, progress=args.progress,
    )
    folder = build_questions(config)
    print_summary(read_summary(folder), Console())
    print(f"wrote {folder / 'questions.parquet'}")


def print_summary(summary: dict, console: Console) -> None:
    """Totals first, then one table per kind of subject (relations sorted, questions per bucket), each followed by
    its skip reasons summed; relations that gave no question are named on one line."""
    totals = Table(title="totals")
    for column in ("", *BUCKETS, "all"):
        totals.add_column(column, justify="right")
    per_bucket = summary.get("questions_per_bucket", {})
    totals.add_row("questions", *(f"{per_bucket.get(b, 0):,}" for b in BUCKETS), f"{summary['questions']:,}")
    if "subjects_per_bucket" in summary:  # embedded graph: subjects of every kind
        kinds = summary["subjects_per_bucket"].values()
        counts = [sum(kind[b] for kind in kinds) for b in BUCKETS]
        totals.add_row("subjects", *(f"{c:,}" for c in counts), f"{sum(counts):,}")
    if "buckets" in summary:
        totals.add_row("entities", *(f"{summary['buckets'][b]['entities']:,}" for b in BUCKETS),
                       f"{summary['entities']:,}")
        totals.add_row("triples", *(f"{summary['buckets'][b]['triples']:,}" for b in BUCKETS),
                       f"{summary['triples']:,}")
    console.print(totals)
    answering = [row for row in summary["relation_table"] if any(row["questions"].values())]
    console.print(f"{len(answering)} of {len(summary['relation_table'])} relations gave questions")
    if summary.get("lines") is not None:
        console.print(f"{summary['lines']:,} lines: {summary['triples']:,} triples, "
                      f"{summary['comment_or_blank_lines']:,} comments/blank, {summary['bad_lines']:,} malformed")
        for number, text in summary.get("bad_line_examples", [])[:5]:
            console.print(f"  malformed line {number}: {text}", markup=False, highlight=False)

    by_kind: dict[str, list[dict]] = {}
    for row in answering:
        by_kind.setdefault(row.get("kind", "all relations"), []).append(row)
    for kind, rows in sorted(by_kind.items()):
        questions = sum(sum(row["questions"].values()) for row in rows)
        table = Table(title=f"{kind}: questions per relation and bucket ({questions:,} over {len(rows)} relations)")
        for column in ("relation", *BUCKETS, "questions", "facts", "skipped"):
            table.add_column(column, justify="left" if column == "relation" else "right")
        skipped: Counter = Counter()
        for row in sorted(rows, key=lambda row: row["relation"]):
            skipped.update(row["skipped"])
            table.add_row(row["relation"], *(f"{row['questions'][b]:,}" for b in BUCKETS),
                          f"{sum(row['questions'].values()):,}", f"{sum(row['facts'].values()):,}",
                          f"{sum(row['skipped'].values()):,}")
        console.print(table)
        console.print("skipped: " + ", ".join(f"{reason} {count:,}" for reason, count in skipped.most_common()))
    idle = [row for row in summary["relation_table"] if not any(row["questions"].values())]
    if idle:
        reasons: Counter = Counter()
        for row in idle:
            reasons.update(row["skipped"])
        why = ", ".join(f"{reason}: {count:,}" for reason, count in reasons.most_common())
        names = ", ".join(sorted(row["relation"] for row in idle))
        console.print(f"{len(idle)} relation(s) gave no question ({why}): {names}", markup=False, highlight=False)


def _paraphrase(args: argparse.Namespace) -> None:
    config = ParaphraseConfig(
        questions=args.questions, out=args.out, model=args.model, k=args.k, rounds=args.rounds,
        samples_per_round=args.samples_per_round, temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, prompt=args.prompt, seed=args.seed, keep_existing=args.keep_existing,
        device=args.device, trust_remote_code=args.trust_remote_code, overwrite=args.overwrite,
        progress=args.progress,
    )
    folder = paraphrase_questions(config)
    print(f"wrote {folder / 'questions.parquet'}")
