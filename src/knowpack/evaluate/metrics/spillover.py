"""Spill-over reasons: why did a question the adapter was not trained on change category? (the study's Table 5)

For every shifted question (lenient category before ≠ after) four candidate reasons are checked, each on the
greedy answers of *every* prompt (the study looked at the first prompt only):

* ``lost_refusal`` (positive shifts only, as in the study): the base model refused it under at least one prompt
  and the adapter refuses under none;
* ``exploded_answer``: one of its answers after training contains an exploded answer (see ``collapse``; whole
  words, as the study's containment test);
* ``target_leakage``: one of its answers after training contains the answer of a packed fact (any alias of a
  trained Unknown fact, normalised, whole words — never the rendered training target, which in chat mode is a
  whole assistant turn);
* ``same_domain``: its relation's domain is the domain of a packed fact's relation (``undefined`` never counts).

The packed facts are the trained Unknown facts, as in the study: the HighlyKnown extras and paraphrase rows of a
mixture do not make their answers or domains "trained". ``explained`` = at least one reason holds. Shares are over
the shifted questions of a row's transition.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from knowpack.evaluate.metrics import Figure, Metric, MetricContext, epoch_first, register
from knowpack.evaluate.metrics.collapse import greedy_answers
from knowpack.evaluate.metrics.refusals import RefusalDetector, detector_of, refused_questions
from knowpack.evaluate.metrics.shift import SHORT, direction, paired_categories
from knowpack.lazy import lazy
from knowpack.text import normalize

np = lazy("numpy")
pd = lazy("pandas")

REASONS = ("lost_refusal", "exploded_answer", "target_leakage", "same_domain")
UNDEFINED_DOMAIN = "undefined"
REASON_LABELS = {"lost_refusal": "lost refusal", "exploded_answer": "exploded answer",
                 "target_leakage": "target leakage", "same_domain": "same domain", "explained": "explained (any)"}
SPILLOVER_SCHEMA = pa.schema([("epoch", pa.int32()), ("question_id", pa.string()), ("before", pa.string()),
                              ("after", pa.string()), ("transition", pa.string()), ("direction", pa.int8()),
                              ("trained", pa.bool_()), ("bucket", pa.string()), ("relation", pa.string()),
                              ("relation_domain", pa.string()), *[(r, pa.bool_()) for r in REASONS],
                              ("explained", pa.bool_()), ("answer", pa.string()), ("leaked_target", pa.string())])
SPILLOVER_SUMMARY_SCHEMA = pa.schema([("epoch", pa.int32()), ("scope", pa.string()), ("transition", pa.string()),
                                      ("n_shifted", pa.int64()), *[(r, pa.float64()) for r in REASONS],
                                      ("explained", pa.float64())])


class PhraseFinder:
    """Finds phrases (trained answers, exploded answers) inside answers by looking up the answer's word n-grams."""

    def __init__(self, phrases: Iterable[str]):
        self.targets = {t for t in (normalize(x) for x in phrases) if t}
        self.longest = max((len(t.split()) for t in self.targets), default=0)

    def find(self, answer_key: str) -> str:
        """The longest phrase that occurs in the normalised answer on word boundaries, else ''."""
        words = answer_key.split()
        for size in range(min(self.longest, len(words)), 0, -1):
            for start in range(len(words) - size + 1):
                gram = " ".join(words[start : start + size])
                if gram in self.targets:
                    return gram
        return ""


def spillover_questions(
    pairs: pd.DataFrame,
    questions: pd.DataFrame,
    before: pd.DataFrame,
    after: pd.DataFrame,
    *,
    packed_ids: list[str],
    exploded_keys: set[str],
    detector: RefusalDetector,
) -> pd.DataFrame:
    """One row per shifted question: question_id, before, after, transition, direction, trained, bucket, relation,
    relation_domain, the four reasons, explained, answer (prompt 0's greedy answer after), leaked_target.
    ``packed_ids``: the trained Unknown facts; ``pairs['trained']`` marks any question of the train set."""
    shifted = pairs[pairs["before"] != pairs["after"]].copy()
    shifted["direction"] = direction(shifted["before"], shifted["after"])
    shifted["transition"] = shifted["before"].map(SHORT) + "→" + shifted["after"].map(SHORT)
    by_id = questions.set_index("id")
    shifted["relation_domain"] = shifted["question_id"].map(by_id["relation_domain"]).fillna(UNDEFINED_DOMAIN)
    packed = by_id.reindex(sorted(packed_ids)).dropna(subset=["relation_domain"])
    packed_domains = set(packed["relation_domain"]) - {UNDEFINED_DOMAIN}
    packed_answers = [alias for aliases in packed["aliases"] for alias in aliases]

    ids = set(shifted["question_id"])
    refused_before = refused_questions(before[before["question_id"].isin(ids)], detector)
    refused_after = refused_questions(after[after["question_id"].isin(ids)], detector)
    answers = greedy_answers(after[after["question_id"].isin(ids)], detector)
    answers["leaked"] = answers["key"].map(PhraseFinder(packed_answers).find)
    exploded = PhraseFinder(exploded_keys)
    answers["exploded"] = answers["key"].map(lambda key: exploded.find(key) != "")
    answers = answers.sort_values(["question_id", "prompt_id"])
    per_question = answers.groupby("question_id").agg(
        exploded_answer=("exploded", "any"),
        leaked_target=("leaked", lambda s: next((t for t in s if t), "")),
        answer=("answer", "first"),
    )

    qid = shifted["question_id"]
    shifted["lost_refusal"] = ((shifted["direction"] > 0) & (qid.map(refused_before).fillna(0) > 0)
                               & (qid.map(refused_after).fillna(0) == 0))
    shifted["exploded_answer"] = qid.map(per_question["exploded_answer"]).fillna(False).astype(bool)
    shifted["leaked_target"] = qid.map(per_question["leaked_target"]).fillna("").astype(str)
    shifted["target_leakage"] = shifted["leaked_target"] != ""
    shifted["same_domain"] = shifted["relation_domain"].isin(packed_domains)
    shifted["explained"] = shifted[list(REASONS)].any(axis=1)
    shifted["answer"] = qid.map(per_question["answer"]).fillna("").astype(str)
    columns = ["question_id", "before", "after", "transition", "direction", "trained", "bucket", "relation",
               "relation_domain", *REASONS, "explained", "answer", "leaked_target"]
    return shifted[columns].sort_values(["direction", "transition", "question_id"], ignore_index=True)


def spillover_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Table 5: per scope (``all``, ``not_trained``) and transition group (each transition seen, ``positive``,
    ``negative``, ``shifted``): n_shifted and the share of each reason and of ``explained``."""
    rows = []
    for scope, scoped in (("all", table), ("not_trained", table[~table["trained"]])):
        groups = [(t, scoped[scoped["transition"] == t]) for t in sorted(scoped["transition"].unique())]
        groups += [("positive", scoped[scoped["direction"] > 0]), ("negative", scoped[scoped["direction"] < 0])]
        groups.append(("shifted", scoped))
        for name, part in groups:
            n = len(part)
            shares = {reason: float(part[reason].mean()) if n else 0.0 for reason in (*REASONS, "explained")}
            rows.append({"scope": scope, "transition": name, "n_shifted": n, **shares})
    return pd.DataFrame(rows, columns=["scope", "transition", "n_shifted", *REASONS, "explained"]).astype(
        {"n_shifted": "int64"}
    )


@register
class Spillover(Metric):
    """Table 5: why questions the adapter was not trained on changed category."""

    name = "spillover"
    order = 5
    tables = {"spillover": SPILLOVER_SCHEMA, "spillover_summary": SPILLOVER_SUMMARY_SCHEMA}

    def compute(self, ctx: MetricContext) -> dict[str, pd.DataFrame]:
        found = detector_of(ctx)
        exploded = ctx.tables["exploded"]
        questions, summaries = [], []
        for epoch, (responses, labels) in sorted(ctx.after.items()):
            pairs = paired_categories(ctx.base_labels, labels, ctx.questions, ctx.trained_ids, "lenient")
            spill = spillover_questions(pairs, ctx.questions, ctx.base_responses, responses,
                                        packed_ids=ctx.unknown_ids,
                                        exploded_keys=set(exploded.loc[exploded["epoch"] == epoch, "key"]),
                                        detector=found)
            questions.append(spill.assign(epoch=epoch))
            summaries.append(spillover_summary(spill).assign(epoch=epoch))
        return {"spillover": epoch_first(pd.concat(questions, ignore_index=True)),
                "spillover_summary": epoch_first(pd.concat(summaries, ignore_index=True))}

    def summarize(self, tables, ctx) -> dict[str, Any]:
        spill = tables["spillover_summary"]
        spill = spill[(spill["epoch"] == ctx.last_epoch) & (spill["scope"] == "not_trained")].set_index("transition")
        return {"spillover": {t: {c: spill.loc[t, c] for c in ("n_shifted", *REASONS, "explained")}
                              for t in ("positive", "negative", "shifted")}}

    def figures(self, summary: dict[str, Any]) -> list[Figure]:
        return [Figure(f"spillover_{t}_explained", f"spill-over {t} explained", summary["spillover"][t]["explained"])
                for t in ("positive", "negative")]

    # -- report

    def collect(self, evaluation) -> dict[str, pd.DataFrame]:
        from knowpack.report.collect import last_epoch, where

        spill = evaluation.table("spillover_summary")
        if spill is None:
            return {}
        spill = last_epoch(where(spill, scope="not_trained"))
        spill = spill[spill["transition"].isin(["positive", "negative"])]
        return {"spillover": spill.rename(columns={"transition": "direction"})[
            ["direction", "n_shifted", *REASONS, "explained"]]}

    def sections(self, data, out: Path) -> list:
        from knowpack.report.cells import groups
        from knowpack.report.html import Section
        from knowpack.sweep.spec import mixture_label

        spill = data.frame("spillover")
        if spill.empty:
            return []
        rows = []
        for (size, mixture), group in groups(spill, data.mixtures):
            for direction_name in ("positive", "negative"):
                part = group[group["direction"] == direction_name]
                shifted = part["n_shifted"].sum()
                row = {"facts": int(size), "mixture": mixture_label(mixture), "shift": direction_name,
                       "shifted questions": f"{shifted / max(len(part), 1):.0f}"}
                for reason in (*REASONS, "explained"):
                    share = (part[reason] * part["n_shifted"]).sum() / shifted if shifted else np.nan
                    row[REASON_LABELS[reason]] = "–" if np.isnan(share) else f"{share:.2f}"
                rows.append(row)
        return [Section("Spill-over reasons (Table 5)",
                        "For questions that were not trained on and changed category: the share with each candidate "
                        "reason (a question can have several) and the share explained by at least one.",
                        reasons_figure(spill, data.mixtures, out / "spillover_reasons.png"),
                        (("Spill-over reasons", pd.DataFrame(rows)),))]


def reasons_figure(spill: pd.DataFrame, mixtures: list[str], path: Path) -> Path | None:
    """Share of shifted questions each reason explains, per (size, mixture), for positive and negative shifts."""
    if spill.empty:
        return None
    from knowpack.report.plots import plt, save
    from knowpack.sweep.spec import mixture_label

    reasons = [r for r in REASON_LABELS if r in spill]
    directions = [d for d in ("positive", "negative") if d in set(spill["direction"])]
    order = {m: i for i, m in enumerate(mixtures)}
    conditions = (spill[["unknown", "mixture"]].drop_duplicates()
                  .assign(o=lambda f: f["mixture"].map(order)).sort_values(["unknown", "o"]))
    names = [f"{u} fact{'s' if u != 1 else ''}, {mixture_label(m)}"
             for u, m in zip(conditions["unknown"], conditions["mixture"])]
    fig, axes = plt.subplots(1, len(directions), figsize=(4.3 * len(directions) + 3.5,
                                                          max(2.8, 0.33 * len(names) + 2.0)),
                             squeeze=False, sharey=True)
    for ax, direction_name in zip(axes[0], directions):
        part = spill[spill["direction"] == direction_name]
        values = np.full((len(names), len(reasons)), np.nan)
        for row, (u, m) in enumerate(zip(conditions["unknown"], conditions["mixture"])):
            cell = part[(part["unknown"] == u) & (part["mixture"] == m)]
            shifted = cell["n_shifted"].sum()
            if shifted > 0:
                values[row] = [(cell[r] * cell["n_shifted"]).sum() / shifted for r in reasons]
        ax.imshow(np.nan_to_num(values, nan=0.0), cmap="Purples", vmin=0, vmax=1, aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            ax.text(j, i, "–" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=7.5,
                    color="white" if value > 0.6 else "black")
        ax.set_xticks(range(len(reasons)), [REASON_LABELS[r] for r in reasons], rotation=30, ha="right")
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_title(f"{direction_name} shifts: share explained")
    fig.tight_layout()
    return save(fig, path)
