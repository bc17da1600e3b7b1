"""The injection's report (``report.html`` + ``report.md`` in the inject folder): its first paragraph answers how
many facts stuck, at which epoch and at what cost; the sections below show the evidence."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from knowpack.inject import folder as layout
from knowpack.report.html import Section, render_html, render_markdown
from knowpack.runfolder import write_bytes

FIGURE_FILE = "epochs.png"


def first_paragraph(record: dict[str, Any]) -> str:
    facts, chosen, damage = record["facts"], record["chosen"], record["damage"]
    epoch = chosen["epoch"]
    row = next(r for r in record["epochs"] if r["epoch"] == epoch)
    shift, answers = damage["shift"], damage["answers"]
    heldout = row["heldout_reliability"]
    text = (f"{facts['stuck']} of {facts['packed']} facts stuck (answered right under every prompt) with the adapter "
            f"of epoch {epoch} of {len(record['epochs']) - 1}: reliability {row['reliability']:.0%} on the facts"
            + (f", {heldout:.0%} on held-out paraphrases of them" if heldout is not None else "") + ". ")
    interval = shift["negative_ci"]
    text += (f"It cost {shift['negative']:.1%} of the {shift['n_questions']} guard questions a SliCK category"
             + (f" (95% interval {interval[0]:.1%}–{interval[1]:.1%})" if interval[0] is not None else "")
             + f" while {shift['positive']:.1%} rose one; refusals {answers['base']['refusal_rate']:.0%} → "
             f"{answers['after']['refusal_rate']:.0%}")
    for name, score in row["benchmarks"].items():
        base = record["epochs"][0]["benchmarks"][name]
        text += f"; {name} {base['value']:.3f} → {score['value']:.3f}"
    text += "."
    if not chosen["limit_met"]:
        text += f" No epoch stayed within the damage limit ({_limit(record['limit'])}); this is the least damaging."
    best = max((r for r in record["epochs"] if r["epoch"] >= 1), key=lambda r: (r["reliability"], -r["epoch"]))
    if best["reliability"] > row["reliability"]:  # the limit cost learning: say what it would take
        text += (f" Epoch {best['epoch']} reached reliability {best['reliability']:.0%} at a negative shift of "
                 f"{best['guard_negative_shift']:.1%}, outside the damage limit ({_limit(record['limit'])}); "
                 "raise the limit to export it.")
    known = len(facts["known"])
    if known:
        text += (f" {known} fact{'s' if known != 1 else ''} the model already knew "
                 f"{'were' if known != 1 else 'was'} {'packed too' if facts['kept_known'] else 'left out'}.")
    if facts["skipped"]:
        text += f" {len(facts['skipped'])} bad row(s) of the facts file were skipped."
    return text


def _limit(limit: dict[str, Any]) -> str:
    parts = []
    if limit["max_negative_shift"] is not None:
        parts.append(f"negative shift ≤ {limit['max_negative_shift']:g}")
    if limit["max_benchmark_drop"] is not None:
        parts.append(f"benchmark drop ≤ {limit['max_benchmark_drop']:g}")
    return ", ".join(parts) or "none"


def write_report(record: dict[str, Any], out: Path) -> list[str]:
    """Write report.html and report.md into ``out``; returns the pictures written beside them."""
    sections = [
        Section("Your facts", f"Each fact's SliCK category for the base model and for the adapter of epoch "
                f"{record['chosen']['epoch']}, and the share of the {record['labels']['prompts']} prompts it "
                "answers right.", tables=(("Facts", facts_table(record)),)),
        Section("Every epoch", "Reliability on the packed facts and on held-out paraphrases of them, the guard "
                "questions that fell or rose a category, and benchmark scores, after each epoch (0 = base model). "
                f"The exported epoch: {record['chosen']['why']} ({_limit(record['limit'])}).",
                epochs_figure(record, out / FIGURE_FILE), (("Per epoch", epochs_table(record)),)),
        Section(f"What it cost (guard set, epoch {record['chosen']['epoch']})", damage_text(record),
                tables=(("Category transitions of the guard questions (rows: base model, columns: adapter)",
                         transitions_table(record)),)),
        Section("How it was made", settings_text(record),
                tables=(("Why this mixture", pd.DataFrame({"reason": record["mixture"]["reasons"]})),)),
    ]
    title = f"knowpack inject: {Path(record['facts']['file']).name} into {record['model']}"
    meta = f"{out.resolve()} · knowpack {record['knowpack']} · made {time.strftime('%Y-%m-%d %H:%M')}"
    write_bytes(out / layout.HTML_FILE, render_html(title, meta, record["summary"], sections).encode())
    write_bytes(out / layout.MARKDOWN_FILE, render_markdown(title, meta, record["summary"], sections).encode())
    return [s.figure.name for s in sections if s.figure is not None]


def facts_table(record: dict[str, Any]) -> pd.DataFrame:
    rows = record["fact_table"]
    return pd.DataFrame({"question": [r["question"] for r in rows], "answer": [r["answer"] for r in rows],
                         "base model": [r["before"] for r in rows],
                         "packed": ["yes" if r["packed"] else "no (known)" for r in rows],
                         "adapter": [r["after"] for r in rows], "right": [f"{r['right']:.0%}" for r in rows]})


def epochs_table(record: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for r in record["epochs"]:
        row = {"epoch": "base" if r["epoch"] == 0 else str(r["epoch"]), "reliability": f"{r['reliability']:.3f}",
               "held-out paraphrases": "–" if r["heldout_reliability"] is None else f"{r['heldout_reliability']:.3f}",
               "guard fell": f"{r['guard_negative_shift']:.3f}", "guard rose": f"{r['guard_positive_shift']:.3f}"}
        for name, score in r["benchmarks"].items():
            row[name] = f"{score['value']:.3f}"
        row["exported"] = "◀" if r["epoch"] == record["chosen"]["epoch"] else ""
        rows.append(row)
    return pd.DataFrame(rows)


def epochs_figure(record: dict[str, Any], path: Path) -> Path:
    from knowpack.report.plots import plt, save

    rows = [r for r in record["epochs"]]
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(epochs, [r["reliability"] for r in rows], marker="o", label="reliability on the facts")
    if any(r["heldout_reliability"] is not None for r in rows):
        ax.plot(epochs, [r["heldout_reliability"] for r in rows], marker="o", label="on held-out paraphrases")
    ax.plot(epochs, [r["guard_negative_shift"] for r in rows], marker="s", color="tab:red",
            label="guard questions that fell a category")
    limit = record["limit"]["max_negative_shift"]
    if limit is not None:
        ax.axhline(limit, color="tab:red", ls=":", lw=1, label="damage limit")
    ax.axvline(record["chosen"]["epoch"], color="grey", ls="--", lw=1, label="exported epoch")
    ax.set_xlabel("epoch (0 = base model)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xticks(epochs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    return save(fig, path)


def damage_text(record: dict[str, Any]) -> str:
    damage = record["damage"]
    shift, accuracy, answers = damage["shift"], damage["accuracy"], damage["answers"]
    sign = accuracy["sign_test"]
    text = (f"{shift['n_negative']} of the {shift['n_questions']} guard questions fell a SliCK category "
            f"({shift['negative']:.1%}) and {shift['n_positive']} rose one ({shift['positive']:.1%}); 95% bootstrap "
            "intervals over questions: " + _interval(shift["negative_ci"]) + " and " + _interval(shift["positive_ci"])
            + f". Accuracy on the guard (share of prompts answered right) {accuracy['before']:.3f} → "
            f"{accuracy['after']:.3f}: {sign['better']} questions better, {sign['worse']} worse, exact sign test "
            f"p = {sign['p_value']:.3g}. Refusals {answers['base']['refusal_rate']:.1%} → "
            f"{answers['after']['refusal_rate']:.1%}; distinct answers {answers['base']['distinct_answers']} → "
            f"{answers['after']['distinct_answers']}, the most frequent one {answers['after']['top_answer'][:60]!r} "
            f"({answers['after']['top_share']:.1%} of answers, base {answers['base']['top_share']:.1%}).")
    guard = record["guard"]
    size = ("all of its" if guard["size"] == guard["of"] else f"a sample stratified by relation and bucket, "
            f"{guard['size']} of its {guard['of']}")
    return text + (f" The guard is {record['guard']['source']}: {size} questions ({guard['size_from']}), "
                   f"{guard['questions']} after leaving out any that asks one of the facts; none was trained on.")


def _interval(interval: list[float | None]) -> str:
    return "–" if interval[0] is None else f"{interval[0]:.1%}–{interval[1]:.1%}"


def transitions_table(record: dict[str, Any]) -> pd.DataFrame:
    matrix = record["damage"]["transitions"]
    return pd.DataFrame([{"base model": before, **after} for before, after in matrix.items()])


def settings_text(record: dict[str, Any]) -> str:
    facts, train, mixture = record["facts"], record["train"], record["mixture"]
    paraphrases = facts["paraphrases"]
    return (f"{facts['rows']} facts read from {facts['file']}; paraphrases: {paraphrases['given']} given, "
            f"{paraphrases['templates']} from knowpack's relation templates, {paraphrases['generated']} written by the "
            f"model.{_known_skipped(mixture)} Trained with {' + '.join(mixture['extra']) or 'no extra data'} per fact "
            f"({'given with --extra' if mixture['given'] else 'the inject policy, docs/inject.md'}). SliCK labels "
            f"from {record['labels']['prompts']} few-shot prompts ({record['labels']['shots']} shots, greedy). LoRA "
            f"rank {train['rank']}, alpha {train['alpha']:g}, lr {train['lr']:g}, {train['epochs']} epochs, batch "
            f"{train['batch_size']}, seed {train['seed']}. Benchmarks: {benchmarks_text(record['benchmark_options'])}. "
            "Compare any two labellings again with `knowpack diff` (docs/inject.md).")


def _known_skipped(mixture: dict[str, Any]) -> str:
    skipped = mixture["known_skipped"]
    return f" {len(skipped)} bad row(s) of the --known file were skipped." if skipped else ""


def benchmarks_text(options: dict[str, Any]) -> str:
    tasks = options.get("benchmarks", ("mmlu",))
    if not tasks:
        return "none"
    subjects = options.get("mmlu_subjects") or ("every subject",)
    limit = f", at most {options['limit']} questions per task" if options.get("limit") else ""
    return f"{', '.join(tasks)} (MMLU: {', '.join(subjects)}{limit})"
