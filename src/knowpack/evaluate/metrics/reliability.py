"""Reliability: does the adapter answer the packed facts, and does the fact survive a new wording?

Reliability of a set of facts = correct greedy answers / greedy answers, over every (fact, prompt) pair, with
the labels' own matching (lenient: an alias occurs in the answer; strict: the answer is an alias). On *held-out
paraphrases* the same is measured on rephrasings of the packed questions that were not in the train set: a fact
that is only reproduced under its trained wording has been memorised as a string, not learned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from knowpack.errors import InputError
from knowpack.evaluate.metrics import HIGHER, Figure, Metric, MetricContext, epoch_first, register
from knowpack.lazy import lazy
from knowpack.text import normalize

pd = lazy("pandas")

PARAPHRASE_MARK = "@paraphrase"
TRAINED, HELDOUT = "trained", "heldout_paraphrase"
RELIABILITY_SCHEMA = pa.schema([("epoch", pa.int32()), ("scope", pa.string()), ("n_questions", pa.int64()),
                                ("n_answers", pa.int64()), ("reliability_lenient", pa.float64()),
                                ("reliability_strict", pa.float64())])


def reliability(responses: pd.DataFrame, question_ids: set[str]) -> dict[str, float | int]:
    """Share of correct greedy answers over ``question_ids`` × prompts. Every id must have answers."""
    greedy = responses[(responses["sample_id"] == 0) & responses["question_id"].isin(question_ids)]
    missing = question_ids - set(greedy["question_id"])
    if missing:
        raise InputError(f"{len(missing)} evaluated question(s) have no greedy answers, e.g. {sorted(missing)[0]}")
    return {
        "n_questions": len(question_ids),
        "n_answers": len(greedy),
        "reliability_lenient": float(greedy["correct_lenient"].mean()) if len(greedy) else 0.0,
        "reliability_strict": float(greedy["correct_strict"].mean()) if len(greedy) else 0.0,
    }


def heldout_paraphrase_questions(
    questions: pd.DataFrame, train_set: pd.DataFrame, fact_ids: list[str], per_fact: int
) -> pd.DataFrame:
    """Questions (questions.parquet schema) asking the packed facts in wordings the train set never used.

    A paraphrase counts as used when its normalised text occurs, on word boundaries, in the normalised prompt of
    any train row of the same fact (train prompts are full chat-formatted texts). The first ``per_fact`` unused
    paraphrases of each fact are kept, in the questions file's order; each becomes a question with id ``"{fact_id}@paraphrase{k}"`` (k = its index in ``paraphrases``)
    and the fact's answer and aliases.
    """
    prompts = train_set.groupby("question_id")["prompt"].agg(lambda p: [normalize(x) for x in p]).to_dict()
    facts = questions[questions["id"].isin(fact_ids)]
    rows = []
    for fact in facts.itertuples(index=False):
        trained = prompts.get(fact.id, [])
        kept = 0
        for index, paraphrase in enumerate(fact.paraphrases if fact.paraphrases is not None else []):
            if kept == per_fact:
                break
            norm = normalize(paraphrase)
            if not norm or norm == normalize(fact.question) or any(f" {norm} " in f" {p} " for p in trained):
                continue
            row = fact._asdict()
            row.update(id=f"{fact.id}{PARAPHRASE_MARK}{index}", question=paraphrase, paraphrases=[])
            rows.append(row)
            kept += 1
    return pd.DataFrame(rows, columns=questions.columns)


def fact_of(paraphrase_id: str) -> str:
    """The packed fact a held-out paraphrase question asks about."""
    return paraphrase_id.rsplit(PARAPHRASE_MARK, 1)[0]


def best_epoch(table: pd.DataFrame, scope: str = "trained") -> int | None:
    """The earliest trained epoch (≥ 1) with the highest lenient reliability in ``scope``; None without epochs."""
    rows = table[(table["scope"] == scope) & (table["epoch"] >= 1)]
    if rows.empty:
        return None
    top = rows["reliability_lenient"].max()
    return int(rows.loc[rows["reliability_lenient"] == top, "epoch"].min())


@register
class Reliability(Metric):
    """Table 2 / Figure 2: the packed facts (and their held-out rephrasings) answered right, per epoch."""

    name = "reliability"
    order = 2
    tables = {"reliability": RELIABILITY_SCHEMA}
    reads_all_questions = False

    def compute(self, ctx: MetricContext) -> dict[str, pd.DataFrame]:
        rows = []
        for epoch, responses in sorted(ctx.probe.items()):
            for scope, ids in ((TRAINED, ctx.unknown_ids), (HELDOUT, ctx.paraphrase_ids)):
                if ids:
                    rows.append({"epoch": epoch, "scope": scope, **reliability(responses, set(ids))})
        return {"reliability": epoch_first(pd.DataFrame(rows))}

    def summarize(self, tables, ctx) -> dict[str, Any]:
        table = tables["reliability"]
        return {
            "reliability": {
                scope: {str(r.epoch): {"lenient": r.reliability_lenient, "strict": r.reliability_strict}
                        for r in part.itertuples()}
                for scope, part in table.groupby("scope")
            } if len(table) else {},
            "best_epoch": best_epoch(table) if len(table) else None,
            "best_epoch_heldout_paraphrase": best_epoch(table, HELDOUT) if len(table) else None,
        }

    def figures(self, summary: dict[str, Any]) -> list[Figure]:
        last = str((summary["shift_epochs"] or summary["epochs"])[-1])  # none when the damage was not measured
        out = []
        for scope, key in ((TRAINED, "reliability"), (HELDOUT, "heldout_reliability")):
            per_epoch = summary["reliability"].get(scope, {})
            if per_epoch:
                value = per_epoch.get(last, {})
                out.append(Figure(key, f"reliability {scope} (epoch {last})", value.get("lenient"), HIGHER))
                out.append(Figure(f"{key}_strict", f"reliability {scope} strict (epoch {last})", value.get("strict"),
                                  HIGHER))
        out.append(Figure("best_epoch", "best epoch", summary.get("best_epoch")))
        return out

    # -- report

    def collect(self, evaluation) -> dict[str, pd.DataFrame]:
        table = evaluation.table("reliability")
        if table is None:
            return {}
        return {"reliability": table.rename(columns={"reliability_lenient": "reliability"})[
            ["epoch", "scope", "reliability"]]}

    def sections(self, data, out: Path) -> list:
        from knowpack.report.cells import by_size_and_mixture, cell
        from knowpack.report.html import Section

        per_epoch = data.frame("reliability")
        trained = per_epoch[per_epoch["scope"] == TRAINED] if len(per_epoch) else per_epoch
        final = final_values(data)
        paraphrased = final_values(data, HELDOUT)
        render = lambda g: cell(g["reliability"])  # noqa: E731
        return [
            Section("Reliability per epoch (Figure 2)",
                    "Share of correct greedy answers on the packed facts, over every prompt, after each epoch. "
                    "Line: mean over seeds; band: min–max over seeds.",
                    per_epoch_figure(trained, data.mixtures, out / "reliability_per_epoch.png")),
            Section("Reliability after the last epoch (Table 2)",
                    "Reliability on the packed facts after training, by number of facts and mixture (mean "
                    "[min–max] over seeds).",
                    final_figure(final, data.mixtures, out / "reliability_vs_facts.png"),
                    (("Reliability after the last epoch", by_size_and_mixture(final, data.mixtures, render)),
                     ("Reliability on held-out paraphrases of the packed facts (last epoch)",
                      by_size_and_mixture(paraphrased, data.mixtures, render) if len(paraphrased)
                      else pd.DataFrame()))),
        ]

    def sentences(self, data) -> list[str]:
        from knowpack.sweep.spec import mixture_label

        final = final_values(data)
        if final.empty:
            return []
        means = final.groupby(["unknown", "mixture"])["reliability"].mean()
        if len(means) == 1:
            return [f"After the last epoch the adapter answers {means.iloc[0]:.0%} of the packed facts correctly."]
        worst = means.idxmin()
        held = 0  # the largest size up to which every mixture (and every smaller size) stays at or above 95%
        for size in sorted(final["unknown"].unique()):
            if means.xs(size, level="unknown").min() < 0.95:
                break
            held = int(size)
        reach = (f"stays at or above 95% up to {held} fact{'s' if held != 1 else ''} for every mixture" if held
                 else "is below 95% already at the smallest size for some mixture")
        return [f"Reliability on the packed facts after the last epoch {reach}; its lowest value, {means.min():.0%}, "
                f"is for {worst[0]} facts with {mixture_label(worst[1])}."]


def final_values(data, scope: str = TRAINED) -> pd.DataFrame:
    """Reliability after each run's last epoch (one row per run)."""
    table = data.frame("reliability")
    if table.empty:
        return pd.DataFrame(columns=["run_id", "unknown", "mixture", "seed", "reliability"])
    rel = table[table["scope"] == scope]
    return rel[rel["epoch"] == rel.groupby("run_id")["epoch"].transform("max")]


def per_epoch_figure(reliability: pd.DataFrame, mixtures: list[str], path: Path) -> Path | None:
    """Figure 2: reliability on the packed facts per epoch, one panel per size, min–max band over seeds."""
    if reliability.empty:
        return None
    import matplotlib
    import numpy as np

    from knowpack.report.plots import band, legend_below, mixture_colors, plt, save
    from knowpack.sweep.spec import mixture_label

    colors = mixture_colors(mixtures)
    sizes = sorted(reliability["unknown"].unique())
    cols = min(3, len(sizes))
    rows = int(np.ceil(len(sizes) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows + 0.6), sharey=True, squeeze=False)
    for ax, size in zip(axes.ravel(), sizes):
        part = reliability[reliability["unknown"] == size]
        for mixture in mixtures:
            series = part[part["mixture"] == mixture]
            if len(series):
                band(ax, series, "epoch", "reliability", colors[mixture], mixture_label(mixture))
        ax.set_title(f"{size} fact{'s' if size != 1 else ''}")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("epoch (0 = base model)" if part["epoch"].min() == 0 else "epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("reliability")
    for ax in axes.ravel()[len(sizes):]:
        ax.set_visible(False)
    fig.suptitle("Reliability on the packed facts per epoch (line: mean, band: min–max over seeds)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    legend_below(fig, axes)
    return save(fig, path)


def final_figure(final: pd.DataFrame, mixtures: list[str], path: Path) -> Path | None:
    """Table 2 as a picture: reliability after the last epoch against the number of packed facts."""
    if final.empty:
        return None
    from knowpack.report.plots import by_facts, mixture_colors, plt, save

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    by_facts(ax, final, "reliability", mixtures, mixture_colors(mixtures))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("reliability after the last epoch")
    ax.set_title("Reliability after training vs number of facts")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower left")
    return save(fig, path)
