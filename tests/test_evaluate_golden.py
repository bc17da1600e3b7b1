"""Tables 2–5 through the real stages on chat-mode data, with every expected number worked out by hand below.

The label stage, the train stage and the evaluate stage run as a user runs them, on the tiny Llama with SmolLM2's
chat template (so the train set holds rendered assistant turns, as in the study's setting). Only the answers are
scripted: a generation backend (plugged into the registry, as any backend is) answers each question from the table
below, by prompt and by adapter, so every metric's value is known in advance:

    id   question (domain)                       aliases                 base          epoch 1       final
    f1   capital of Zorvia (Country)             Velm, Velmark           Brenn Brenn   Velm Brenn    Velm Velm
    f2   capital of Quenth (Country)             Ostrel                  Brenn IDK     Brenn Brenn   Ostrel Brenn
    h1   author of Hamlet (Work)                 W. Shakespeare, Sh.     right right                 right right
    h2   currency of Japan (Currency)            Yen                     Yen Yen                     Yen Yen
    h3   river through Vienna (City)             Danube                  Danube Danube               Danube Danube
    q1   capital of Peru (Country)               Lima                    REFUSAL Lima                Lima Lima
    q2   birthplace of Marie Curie (Person)      Warsaw                  Warsaw Warsaw               Velmark Warsaw
    q3   currency of Peru (Currency)             Sol                     Sol Sol                     Zorg Zorg
    q4   largest city of Chile (Place)           Santiago                Santiago ×2                 Zorg Santiago
    q5   language of Brazil (Language)           Portuguese              Portuguese IDK              Zorg Republic ×2
    q6   capital of Chile (Country)              Santiago                Santiago ×2                 Valparaiso Santiago
    q7   painter of the Mona Lisa (Artwork)      Leonardo da Vinci, L.   right right                 Raphael Leonardo
    q8   capital of Italy (Country)              Rome                    Rome Rome                   Rome Rome

(IDK = "I don't know"; REFUSAL = "I couldn't find any information on that"; two prompts per question.)
"""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from knowpack.evaluate.stage import EvaluateConfig
from knowpack.evaluate.stage import run_loaded as evaluate
from knowpack.kg.folder import QUESTIONS_SCHEMA
from knowpack.models import load_model
from knowpack.probe.backends import BACKENDS, Backend, Generation
from knowpack.probe.prompts import exemplar_pool
from knowpack.probe.stage import LabelConfig
from knowpack.probe.stage import run_loaded as label
from knowpack.runfolder import write_parquet
from knowpack.train.stage import TrainConfig
from knowpack.train.stage import run_loaded as train

REFUSAL, IDK = "I couldn't find any information on that", "I don't know"
FACTS = {  # id: (question, relation, domain, aliases, base answers, final answers)
    "f1": ("What is the capital of Zorvia?", "capital", "Country", ["Velm", "Velmark"], ["Brenn", "Brenn"],
           ["Velm", "Velm"]),
    "f2": ("What is the capital of Quenth?", "capital", "Country", ["Ostrel"], ["Brenn", IDK], ["Ostrel", "Brenn"]),
    "h1": ("Who wrote Hamlet?", "author", "Work", ["William Shakespeare", "Shakespeare"],
           ["Shakespeare", "William Shakespeare"], ["Shakespeare", "William Shakespeare"]),
    "h2": ("What is the currency of Japan?", "currency", "Currency", ["Yen"], ["Yen", "Yen"], ["Yen", "Yen"]),
    "h3": ("Which river flows through Vienna?", "river", "City", ["Danube"], ["Danube", "Danube"],
           ["Danube", "Danube"]),
    "q1": ("What is the capital of Peru?", "capital", "Country", ["Lima"], [REFUSAL, "Lima"], ["Lima", "Lima"]),
    "q2": ("Where was Marie Curie born?", "birthPlace", "Person", ["Warsaw"], ["Warsaw", "Warsaw"],
           ["Velmark", "Warsaw"]),
    "q3": ("What is the currency of Peru?", "currency", "Currency", ["Sol"], ["Sol", "Sol"], ["Zorg", "Zorg"]),
    "q4": ("Which city is the largest in Chile?", "largestCity", "Place", ["Santiago"], ["Santiago", "Santiago"],
           ["Zorg", "Santiago"]),
    "q5": ("Which language is spoken in Brazil?", "language", "Language", ["Portuguese"], ["Portuguese", IDK],
           ["Zorg Republic", "Zorg Republic"]),
    "q6": ("What is the capital of Chile?", "capital", "Country", ["Santiago"], ["Santiago", "Santiago"],
           ["Valparaiso", "Santiago"]),
    "q7": ("Who painted the Mona Lisa?", "painter", "Artwork", ["Leonardo da Vinci", "Leonardo"],
           ["Leonardo da Vinci", "Leonardo"], ["Raphael", "Leonardo"]),
    "q8": ("What is the capital of Italy?", "capital", "Country", ["Rome"], ["Rome", "Rome"], ["Rome", "Rome"]),
}
EPOCH_1 = {"f1": ["Velm", "Brenn"], "f2": ["Brenn", "Brenn"]}
N = len(FACTS)  # 13 questions, 26 greedy answers per model
SEED = 5  # draws h2 (Currency) and q8 (Country) as the two HighlyKnown extras (asserted below)


class Scripted:
    """Answers from the table: the question is found in the prompt's own part, the prompt set by its exemplar,
    the model by the adapter name the label stage gives it (None: the base model; knowpack_1: epoch 1's adapter
    among the probe targets; any other: the final adapter)."""

    def __init__(self, model, tokenizer, decoding, batch_size, router=None):
        self.tokenizer = tokenizer

    def generate(self, jobs):
        for index, job in enumerate(jobs):
            own, prefix = self.tokenizer.decode(job.suffix), self.tokenizer.decode(job.prefix)
            qid = next(q for q, fact in FACTS.items() if fact[0] in own)
            prompt = next(p for p in range(2) if exemplar_pool()[p].question in prefix)
            if job.adapter is None:
                answer = FACTS[qid][4][prompt]
            elif job.adapter == "knowpack_1" and qid in EPOCH_1:
                answer = EPOCH_1[qid][prompt]
            else:
                answer = FACTS[qid][5][prompt]
            tokens = self.tokenizer.encode(answer, add_special_tokens=False) + [self.tokenizer.eos_token_id]
            yield [index], [[Generation(tuple(tokens), True)]]


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("golden")
    rows = [{"id": qid, "subject": qid, "relation": relation, "object": aliases[0], "question": question,
             "answer": aliases[0], "aliases": aliases, "bucket": ("head", "torso", "tail")[i % 3], "popularity": i,
             "relation_domain": domain, "template_id": f"{relation}#0", "paraphrases": []}
            for i, (qid, (question, relation, domain, aliases, _, _)) in enumerate(FACTS.items())]
    questions = root / "questions.parquet"
    write_parquet(questions, pa.Table.from_pylist(rows, schema=QUESTIONS_SCHEMA))
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    assert loaded.chat, "the tiny model carries SmolLM2's chat template: chat-mode rows, as the study"
    with pytest.MonkeyPatch.context() as patch:
        BACKENDS.names()
        patch.setitem(BACKENDS._members, "scripted", Backend("scripted", "answers from the table", Scripted))
        base = label(loaded, LabelConfig(questions=questions, out=root / "labels", model=str(tiny_model_dir),
                                         backend="scripted", n_prompts=2, shots=1, n_samples=0, progress=False))[0]
        run = train(loaded, TrainConfig(labels=base.path, out=root / "run", unknown=2, extra=("highly-known:1",),
                                        seed=SEED, rank=2, alpha=4, epochs=2, batch_size=2, progress=False))
        result = evaluate(loaded, EvaluateConfig(run=run.path, heldout_paraphrases=0, progress=False, options={
            "benchmarks": "none", "explode_factor": 2.5}))
    return base, run, result


def table(evaluation, name):
    return pq.read_table(evaluation.file(f"{name}.parquet")).to_pandas()


def test_the_run_packs_the_two_unknown_facts_with_two_known_extras(evaluation):
    base, run, _ = evaluation
    assert base.labels().set_index("question_id")["category"].to_dict() == {
        "f1": "Unknown", "f2": "Unknown", "q1": "MaybeKnown", "q5": "MaybeKnown",
        **{q: "HighlyKnown" for q in ("h1", "h2", "h3", "q2", "q3", "q4", "q6", "q7", "q8")}}
    train_set = run.train_set()
    assert sorted(run.unknown_ids) == ["f1", "f2"]
    assert sorted(train_set.loc[train_set["kind"] == "highly-known", "question_id"]) == ["h2", "q8"]
    assert all(t.startswith("Answer: ") and t != "Answer: Velm" for t in train_set["target"]), \
        "chat mode: targets are rendered assistant turns with the end-of-turn marker"


def test_reliability_table_2(evaluation):
    _, _, result = evaluation
    trained = table(result, "reliability").set_index("epoch")
    # f1, f2 × 2 prompts = 4 answers: epoch 0 none right; epoch 1 only f1 under prompt 0; final f1 twice + f2 once
    assert trained["n_answers"].tolist() == [4, 4, 4]
    assert trained["reliability_lenient"].tolist() == [0 / 4, 1 / 4, 3 / 4]


def test_shift_table_3(evaluation):
    _, _, result = evaluation
    fractions = table(result, "shift_fractions")
    overall = fractions[(fractions["breakdown"] == "overall") & (fractions["match"] == "lenient")].set_index("scope")
    # all 13: up f1 (UK→HK), f2 (UK→MK), q1 (MK→HK); down q2, q4, q6, q7 (HK→MK), q3 (HK→UK), q5 (MK→UK)
    assert overall.loc["all", ["n_questions", "n_positive", "n_negative"]].tolist() == [13, 3, 6]
    assert overall.loc["all", "positive"] == pytest.approx(3 / 13)
    assert overall.loc["all", "negative"] == pytest.approx(6 / 13)
    # not trained: 13 minus f1, f2 and the extras h2, q8 = 9; only q1 rose, the same six fell
    assert overall.loc["not_trained", ["n_questions", "n_positive", "n_negative"]].tolist() == [9, 1, 6]


def test_refusals_and_collapse_table_4(evaluation):
    _, _, result = evaluation
    refusals = table(result, "refusals").set_index("epoch")
    assert refusals.loc[0, "refusals"] == 3 and refusals.loc[0, "refusal_rate"] == pytest.approx(3 / 26)
    assert refusals.loc[2, "refusals"] == 0
    collapse = table(result, "collapse").set_index("epoch")
    # base, refusals left out: brenn 3, santiago 4, yen 2, danube 2, warsaw 2, sol 2, rome 2, and six answers given
    # once (shakespeare, william shakespeare, lima, portuguese, leonardo da vinci, leonardo): 13 distinct of 23
    base_counts = [3, 4, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1]
    assert collapse.loc[0, ["n_refusals", "distinct_answers"]].tolist() == [3, 13]
    # after: zorg 3; velm, yen, danube, lima, santiago, zorg republic, rome 2 each; 9 answers given once
    after_counts = [3] + [2] * 7 + [1] * 9
    assert sum(after_counts) == 26 and collapse.loc[2, "distinct_answers"] == 17
    for epoch, counts in ((0, base_counts), (2, after_counts)):
        mean = sum(counts) / len(counts)
        std = math.sqrt(sum((c - mean) ** 2 for c in counts) / len(counts))  # population std, as the study
        assert collapse.loc[epoch, "mean_frequency"] == pytest.approx(mean)
        assert collapse.loc[epoch, "std_frequency"] == pytest.approx(std)
    assert collapse.loc[2, "top_answer"] == "Zorg" and collapse.loc[2, "top_share"] == pytest.approx(3 / 26)
    # exploded at factor 2.5: zorg went from unseen (counted as 1) to 3; velm, lima and zorg republic only doubled
    assert table(result, "exploded")["key"].tolist() == ["zorg"]


def test_spillover_reasons_table_5(evaluation):
    _, _, result = evaluation
    spill = table(result, "spillover").set_index("question_id")
    reasons = ["lost_refusal", "exploded_answer", "target_leakage", "same_domain"]
    expected = {
        "q1": {"lost_refusal", "same_domain"},  # a refusal gone on a gain; Country is the packed facts' domain
        "q2": {"target_leakage"},               # answers Velmark, an alias of the packed f1
        "q3": {"exploded_answer"},              # answers Zorg; Currency is only an extra's (h2) domain
        "q4": {"exploded_answer"},
        "q5": {"exploded_answer"},              # "Zorg Republic" contains the exploded "zorg"; its lost refusal
                                                # is a loss, which a lost refusal does not explain
        "q6": {"same_domain"},
        "q7": set(),                            # Raphael: nothing explains it
    }
    for question, wanted in expected.items():
        assert {r for r in reasons if spill.loc[question, r]} == wanted, question
    summary = table(result, "spillover_summary")
    summary = summary[summary["scope"] == "not_trained"].set_index("transition")
    assert summary.loc["positive", ["n_shifted", "lost_refusal", "same_domain", "explained"]].tolist() == [1, 1, 1, 1]
    negative = summary.loc["negative"]
    assert negative.n_shifted == 6
    assert (negative.lost_refusal, negative.exploded_answer, negative.target_leakage, negative.same_domain,
            negative.explained) == pytest.approx((0, 3 / 6, 1 / 6, 1 / 6, 5 / 6))


def test_summary_and_report_show_the_same_numbers(evaluation, tmp_path):
    from knowpack.report.stage import ReportConfig
    from knowpack.report.stage import run as report

    _, run, result = evaluation
    summary = result.summary()
    assert summary["shift"]["all/lenient"]["negative"] == pytest.approx(6 / 13)
    assert summary["spillover"]["negative"]["explained"] == pytest.approx(5 / 6)
    page = report(ReportConfig(source=run.path, out=tmp_path / "report")).file("report.md").read_text()
    assert "mean (std)" in page and "17" in page
