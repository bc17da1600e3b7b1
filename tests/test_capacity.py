"""knowpack capacity: the search (on made-up outcomes), the fit, the ceiling, and the command end to end on the
tiny Llama — same facts for every method, resumed runs reused, the report telling methods and ranks apart."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pyarrow as pa
import pytest
from conftest import error_line, rehash_outputs, write_capital_questions

import knowpack.train.stage
from knowpack.capacity import ceiling
from knowpack.capacity.driver import Search, search_all, seeds, with_facts
from knowpack.capacity.fit import Fit, fit_logistic, largest_size_within
from knowpack.capacity.plots import capacity_figure, ceiling_label, point_note
from knowpack.capacity.results import capacity_rows, sentence, with_residuals
from knowpack.capacity.search import walk
from knowpack.capacity.stage import CapacityConfig
from knowpack.capacity.stage import run as capacity
from knowpack.config import ConfigError
from knowpack.errors import InputError
from knowpack.probe.stage import LabelConfig
from knowpack.probe.stage import run as label
from knowpack.report.stage import ReportConfig
from knowpack.report.stage import run as make_report
from knowpack.runfolder import read_manifest, read_parquet, write_parquet
from knowpack.sweep.runs import release_base_models

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_model_loading")


def holds_up_to(capacity: int):
    return lambda n: n <= capacity


# ---------------------------------------------------------------- the search


def test_search_doubles_then_bisects_until_within_the_tolerance():
    state = walk(holds_up_to(37), start=10, stop=200, tolerance=0.1)
    # 10, 20 hold; 40 breaks. Bisection by geometric means: √(20·40) = 28.3 → 28 holds, √(28·40) = 33.5 → 33
    # holds, √(33·40) = 36.3 → 36 holds, √(36·40) = 37.9 → 38 breaks; 38 − 36 = 2 ≤ 10% of 36: done.
    assert state.tried == (10, 20, 40, 28, 33, 36, 38)
    assert (state.held, state.broke, state.done) == (36, 38, True)


def test_search_stops_at_the_bound_or_goes_down_to_nothing():
    everything = walk(lambda n: True, start=10, stop=200, tolerance=0.1)
    assert everything.tried == (10, 20, 40, 80, 160, 200) and (everything.held, everything.broke) == (200, None)
    nothing = walk(lambda n: False, start=10, stop=200, tolerance=0.1)
    assert nothing.tried == (10, 5, 2, 1) and (nothing.held, nothing.broke) == (0, 1)  # 10/2, round(2.5), round(1)


def test_search_says_what_to_run_next_and_never_asks_twice():
    known: dict[int, bool] = {}
    asked = []

    def outcome(n):
        asked.append(n)
        return known.get(n)

    sizes = []
    while not (state := walk(outcome, start=4, stop=100, tolerance=0.25)).done:
        sizes.append(state.next)
        known[state.next] = state.next <= 21
    # 4, 8, 16 hold, 32 breaks; √(16·32) = 22.6 → 23 breaks; √(16·23) = 19.2 → 19 holds; 23 − 19 = 4 ≤ 25% of 19
    assert sizes == [4, 8, 16, 32, 23, 19]
    assert (state.held, state.broke) == (19, 23)
    # asked again with a stricter constraint, the walk reuses every size it already saw up to where it turns
    stricter = walk(lambda n: known[n] and n <= 8 if n in known else None, start=4, stop=100, tolerance=0.25)
    assert stricter.next == 11 and set(stricter.tried[:-1]) <= set(known)  # √(8·16) = 11.3


def test_every_search_advances_in_the_same_round_and_finished_runs_are_reused():
    capacities = {Search("lora", 1, 42): 3, Search("lora", 8, 42): 50}
    finished: dict[tuple[Search, int], bool] = {}
    rounds = []

    def run_round(walks):
        batch = {search: state.next for search, state in walks.items() if not state.done}
        rounds.append(batch)
        finished.update({(s, n): n <= capacities[s] for s, n in batch.items()})

    walks = search_all(list(capacities), lambda s, n: finished.get((s, n)), run_round, 10, 200, 0.1)
    assert rounds[0] == {Search("lora", 1, 42): 10, Search("lora", 8, 42): 10}
    assert all(len(batch) <= 2 for batch in rounds) and len(rounds) == max(len(w.tried) for w in walks.values())
    # rank 1: 10, 5 break, 2 holds, √(2·5) = 3.2 → 3 holds, √(3·5) = 3.9 → 4 breaks: held 3
    # rank 8: 10, 20, 40 hold, 80 breaks, √(40·80) = 56.6 → 57 breaks, √(40·57) = 47.7 → 48 holds,
    #         √(48·57) = 52.3 → 52 breaks, 52 − 48 = 4 ≤ 10% of 48: held 48 (the capacity 50 lies in [48, 52))
    assert walks[Search("lora", 1, 42)].tried == (10, 5, 2, 3, 4) and walks[Search("lora", 1, 42)].held == 3
    assert walks[Search("lora", 8, 42)].tried == (10, 20, 40, 80, 57, 48, 52)
    assert walks[Search("lora", 8, 42)].held == 48
    again = []
    search_all(list(capacities), lambda s, n: finished.get((s, n)), again.append, 10, 200, 0.1)
    assert again == [], "a finished search asks for no run"


# ---------------------------------------------------------------- the fit and the ceiling


def test_the_fit_recovers_a_logistic_curve_in_log_n_and_where_it_crosses_a_bound():
    sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    truth = [1 / (1 + math.exp(-(4 - 1.5 * math.log(n)))) for n in sizes]
    fit = fit_logistic(sizes, truth)
    assert fit.a == pytest.approx(4, abs=1e-3) and fit.b == pytest.approx(-1.5, abs=1e-3) and fit.rmse < 1e-6
    # reliability 0.9: ln n = (ln 9 − 4) / −1.5 = (2.197225 − 4) / −1.5 = 1.201850, n = e^1.20185 = 3.3261
    assert fit.crossing(0.9) == pytest.approx(3.3261, abs=1e-3)
    shift = Fit(a=-6.0, b=1.0, rmse=0.0, points=9)
    # negative shift 0.02: ln n = ln(0.02 / 0.98) + 6 = −3.891820 + 6 = 2.108180, n = 8.2335
    assert shift.crossing(0.02) == pytest.approx(8.2335, abs=1e-3)
    assert largest_size_within([(fit, 0.9, True), (shift, 0.02, False)]) == pytest.approx(3.3261, abs=1e-3)
    assert largest_size_within([(shift, 0.02, False)]) == pytest.approx(8.2335, abs=1e-3)
    assert fit_logistic([5, 5], [0.5, 0.6]) is None, "one size has no slope"


def test_a_step_between_two_sizes_is_fitted():
    """Rank 1's reliability in a real CPU search (docs/findings.md): nothing learnt up to 5 facts, a quarter at
    10. The best curve is a step between 5 and 10 at the bounds, which scipy reaches only after many steps."""
    fit = fit_logistic([1, 2, 5, 10], [0.0, 0.0, 0.0, 0.25])
    assert fit.rmse < 1e-3
    assert fit.predict([5])[0] < 1e-3 and fit.predict([10])[0] == pytest.approx(0.25, abs=1e-3)
    assert 5 < fit.crossing(0.01) < fit.crossing(0.2) < 10


def test_flat_and_contrary_fits():
    always = Fit(a=10.0, b=0.0, rmse=0.0, points=3)  # σ(10) = 0.99995 at every n
    assert largest_size_within([(always, 0.9, True)]) == math.inf
    assert largest_size_within([(always, 0.02, False)]) is None
    rising = Fit(a=-2.0, b=1.0, rmse=0.0, points=3)  # reliability that rises with n: holds from n = e^(ln 9 + 2)
    shift = Fit(a=-6.0, b=1.0, rmse=0.0, points=3)  # holds up to n = 8.2335
    assert largest_size_within([(rising, 0.9, True), (shift, 0.02, False)]) is None  # 66.5 > 8.2: no n meets both


def test_the_ceiling_is_two_bits_per_parameter_over_the_information_of_a_fact():
    questions = pd.DataFrame({
        "id": ["capital/a", "capital/b", "capital/c", "capital/d", "capital/e", "currency/a", "currency/b"],
        "relation": ["capital"] * 5 + ["currency"] * 2,
        "answer": ["Paris", "Lima", "Rome", "Oslo", "paris.", "Euro", "Yen"],  # "paris." is Paris again
    })
    bits = ceiling.bits_per_fact(questions, ["capital/a", "capital/b", "currency/b"])
    assert list(bits) == [2.0, 2.0, 1.0]  # log2 4 distinct capitals, log2 2 currencies
    mean = bits.mean()  # 5/3 bits per fact
    assert ceiling.reference_facts(1000, mean) == pytest.approx(2 * 1000 / (5 / 3))  # = 1200 facts
    assert ceiling.bits_per_parameter(300, mean, 1000) == pytest.approx(0.5)  # 300 · 5/3 / 1000
    assert "Allen-Zhu & Li" in ceiling.SOURCE and "2 bits/parameter" in ceiling.SOURCE


def logistic(a, b, n):
    return 1 / (1 + math.exp(-(a + b * math.log(n))))


# reliability σ(a + b ln n) with b = −2 crossing 0.9 at n = 500.5: a = ln 9 + 2 ln 500.5 = 2.197225 + 12.431215
RELIABILITY = (math.log(9) + 2 * math.log(500.5), -2.0)
# negative shift σ(c + d ln n) with d = 1 crossing 0.02 at n = 1000:
# c = ln(0.02/0.98) − ln 1000 = −3.891820 − 6.907755
SHIFT = (-10.799575, 1.0)


def test_capacity_over_seeds_is_the_median_with_the_range_in_a_sentence():
    assert seeds(5) == [42, 1337, 10824, 1, 2]  # the study's three, then 1, 2, …
    sizes = [10, 20, 40, 80, 160, 320, 640]
    parameters = 4 * 190_080  # SmolLM2-135M's MLP at rank 4: 30 layers × 3 × (576 + 1536) × 4
    points = pd.DataFrame([{"method": "lora", "rank": 4, "seed": seed, "unknown": n,
                            "reliability": logistic(*RELIABILITY, n), "negative_shift": logistic(*SHIFT, n),
                            "trainable_parameters": parameters, "exposures": 10.0}
                           for seed in (42, 1337, 10824) for n in sizes])
    searches = pd.DataFrame({"method": "lora", "rank": 4, "seed": [42, 1337, 10824], "held": [520, 430, 480],
                             "reached_stop": False})
    config = CapacityConfig(out="c")  # ≥ 0.9 reliability, ≤ 2% negative shift, tolerance 10%
    (row,), fits = capacity_rows(config, points, searches, bits=5.0)
    assert (row["capacity"], row["low"], row["high"], row["seeds"]) == (480, 430, 520, 3)
    # the curves are exact, so the fit finds them; every fitted constraint holds up to min(500.5, 1000) = 500.5
    assert fits[("lora", 4)]["reliability"].b == pytest.approx(-2.0, abs=1e-3)
    assert row["fitted"] == pytest.approx(500.5, rel=1e-4) and row["fitted_kind"] == "size"
    assert row["fitted_beyond_runs"] is False  # 500.5 < 640, the largest size run
    assert row["reference"] == pytest.approx(2 * 760_320 / 5)  # = 304,128 facts at 2 bits per parameter
    assert row["bits_per_parameter"] == pytest.approx(480 * 5 / 760_320)  # = 0.0031566
    assert sentence(row, config) == (
        "lora rank 4 holds 480 (430–520 over 3 seeds) facts at ≥ 0.90 reliability with ≤ 2% negative shift "
        "(search tolerance 10%); the fit puts it at 500 facts (within the sizes run); that is 0.0032 bits per "
        "trainable parameter (760,320) against a ceiling of ~2 (304,128 facts), each fact seen 10 times.")


def test_residuals_are_observed_minus_fitted():
    points = pd.DataFrame({"method": "lora", "rank": 1, "unknown": [1, math.e],
                           "reliability": [0.6, 0.2], "negative_shift": [0.0, 0.1]})
    fits = {("lora", 1): {"reliability": Fit(a=0.0, b=-1.0, rmse=0.0, points=2)}}  # σ(0) = 0.5, σ(−1) = 0.268941
    shown = with_residuals(points, fits)
    assert list(shown["fitted_reliability"]) == pytest.approx([0.5, 0.268941], abs=1e-6)
    assert list(shown["residual_reliability"]) == pytest.approx([0.1, -0.068941], abs=1e-6)
    assert shown["residual_negative_shift"].isna().all()  # no curve fitted: no residual


def test_the_capacity_plot_carries_the_ceiling_with_its_source_and_bits_per_parameter(tmp_path):
    table = pd.DataFrame([
        {"method": "lora", "rank": 1, "capacity": 12.0, "low": 10, "high": 14, "at_least": False,
         "reference": 2 * 190_080 / 5, "bits_per_parameter": 12 * 5 / 190_080, "exposures": 10.0},
        {"method": "lora", "rank": 4, "capacity": 40.0, "low": 40, "high": 40, "at_least": True,
         "reference": 2 * 760_320 / 5, "bits_per_parameter": 40 * 5 / 760_320, "exposures": 10.0},
    ])
    assert point_note(next(table.itertuples())) == "0.00032 bits/param, 10× seen"  # 60 / 190,080 = 0.000316
    assert ceiling_label("lora") == "lora: ceiling ~2 bits/parameter (Allen-Zhu & Li 2024)"
    assert capacity_figure(table, tmp_path / "capacity.png").stat().st_size > 0


def test_your_facts_join_the_guard_set_under_ids_of_their_own(tmp_path):
    guard = write_capital_questions(tmp_path / "guard.parquet", 3)
    facts = tmp_path / "facts.jsonl"
    facts.write_text("".join(json.dumps({"question": f"What is the capital of Zorblat {i}?", "answer": f"Quimby{i}",
                                         "relation": "capital"}) + "\n" for i in range(2)))
    (tmp_path / "data").mkdir()
    questions, mine = with_facts(facts, guard, tmp_path / "data")
    assert read_parquet(questions).num_rows == 5 and read_parquet(mine).num_rows == 2
    theirs = read_parquet(guard).column("id").to_pylist()
    clash = tmp_path / "clash.jsonl"
    clash.write_text(json.dumps({"id": theirs[0], "question": "Q?", "answer": "A"}) + "\n")
    with pytest.raises(InputError, match=f"{clash}: id '{theirs[0]}' is also a question of the embedded set"):
        with_facts(clash, guard, tmp_path / "data")


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def labels(tmp_path_factory, lively_model_dir):
    """40 invented capitals labelled by the lively tiny model; the first six are then set to HighlyKnown, known
    facts the adapters can lose (so the negative shift is not always zero)."""
    root = tmp_path_factory.mktemp("capacity-data")
    questions = write_capital_questions(root / "questions.parquet", 40)
    folder = label(LabelConfig(model=str(lively_model_dir), questions=questions, out=root / "labels", n_prompts=1,
                               shots=1, n_samples=0, max_new_tokens=4, progress=False)).path
    table = read_parquet(folder / "labels.parquet").to_pandas().sort_values("question_id", ignore_index=True)
    table.loc[:5, ["category", "category_strict"]] = "HighlyKnown"
    write_parquet(folder / "labels.parquet", pa.Table.from_pandas(table, preserve_index=False))
    rehash_outputs(folder)
    return folder


def settings(lively_model_dir, labels, out, **changes) -> CapacityConfig:
    values = dict(model=str(lively_model_dir), labels=labels, out=out, ranks=(1, 2), methods=("lora", "full"),
                  seeds=1, start=2, max_facts=4, epochs=1, lr=("1e-2", "full=1e-3"), batch_size=2, reliability=0.9,
                  max_negative_shift=1.0, damage_of_every_run=True, device="cpu", progress=False)
    return CapacityConfig(**{**values, **changes})


HOLDS = {("lora", 1): 2, ("lora", 2): 4, ("full", 1): 3}  # scripted capacities by (method, rank)


@pytest.fixture
def scripted_reliability(monkeypatch):
    """Runs are trained and evaluated for real, but a tiny random model learns nothing in a test's time; so the
    reliability read from each evaluation is replaced by 1 up to a known number of facts per method and rank, 0
    above it, and the searches' results can be worked out by hand."""
    import knowpack.evaluate.metrics as metrics
    from knowpack.evaluate.metrics import Figure

    real = metrics.all_figures

    def scripted(summary):
        config = read_manifest(summary["run"])["config"]
        holds = summary["facts"] <= HOLDS[(config["method"], config["rank"])]
        return [Figure(f.key, f.label, float(holds)) if f.key == "reliability" else f for f in real(summary)]

    monkeypatch.setattr(metrics, "all_figures", scripted)


def test_capacity_searches_every_method_and_rank_on_the_same_facts(lively_model_dir, labels, tmp_path, monkeypatch,
                                                                   scripted_reliability):
    release_base_models()
    result = capacity(settings(lively_model_dir, labels, tmp_path / "cap"))
    summary, points, searches = result.summary(), result.points(), result.searches()
    # by hand, start 2, stop 4, tolerance 10% (a gap of one fact ends a bisection):
    # lora r1 (holds ≤ 2): 2 holds, 4 breaks, √8 = 2.8 → 3 breaks                  → 2
    # lora r2 (holds ≤ 4): 2, 4 hold, and 4 is the bound                           → at least 4
    # full    (holds ≤ 3): 2 holds, 4 breaks, 3 holds                                → 3
    found = {(s.method, s.rank, s.seed): (s.held, list(s.tried)) for s in searches.itertuples()}
    assert found == {("lora", 1, 42): (2, [2, 4, 3]), ("lora", 2, 42): (4, [2, 4]), ("full", 0, 42): (3, [2, 4, 3])}
    table = result.capacity().set_index(["method", "rank"])
    assert list(table.loc[[("lora", 1), ("lora", 2), ("full", 0)], "capacity"]) == [2, 4, 3]
    assert list(table.loc[[("lora", 1), ("lora", 2), ("full", 0)], "at_least"]) == [False, True, False]
    full, rank_1, rank_2 = summary["sentences"]  # in the order of the searches: method, then rank
    assert full.startswith("full fine-tuning holds 3 facts") and full.endswith("each fact seen 1 time.")
    assert rank_1.startswith("lora rank 1 holds 2 facts at ≥ 0.90 reliability with ≤ 100% negative shift (search "
                             "tolerance 10%)")
    assert rank_2.startswith("lora rank 2 holds at least 4 facts")

    # the same facts for every method and rank: a size's draw depends only on its seed
    def packed(method, rank, size):
        row = points[(points["method"] == method) & (points["rank"] == rank) & (points["unknown"] == size)]
        return read_manifest(result.sweep_path / "runs" / row["run_id"].iloc[0])["unknown_ids"]

    assert packed("lora", 1, 4) == packed("lora", 2, 4) == packed("full", 0, 4)
    assert set(packed("lora", 2, 2)) < set(packed("lora", 2, 4))

    # trainable parameters by hand: 2 layers × (gate 64→128, up 64→128, down 128→64); LoRA r·(in + out) each
    assert table.loc[("lora", 1), "trainable_parameters"] == 2 * 3 * (64 + 128) * 1
    assert table.loc[("lora", 2), "trainable_parameters"] == 2 * 3 * (64 + 128) * 2
    assert table.loc[("full", 0), "trainable_parameters"] == 2 * 3 * 64 * 128
    assert set(points["exposures"]) == {1.0}  # 1 epoch × 1 row per fact
    bits = math.log2(40)  # 40 distinct capitals
    assert summary["bits_per_fact"] == pytest.approx(bits)
    assert table.loc[("lora", 2), "reference"] == pytest.approx(2 * 2304 / bits)
    assert table.loc[("lora", 2), "bits_per_parameter"] == pytest.approx(4 * bits / 2304)
    assert {"capacity.png", "fit.png", "pareto.png", "capacity.html", "capacity.md"} <= {
        p.name for p in result.path.iterdir()}

    # asked again: nothing trains; looking further trains only the sizes the new paths need
    trained = []
    real = knowpack.train.stage.run_loaded
    monkeypatch.setattr(knowpack.train.stage, "run_loaded", lambda loaded, config: trained.append(
        (config.method, config.rank, config.seed, config.unknown)) or real(loaded, config))
    capacity(settings(lively_model_dir, labels, tmp_path / "cap"))
    assert trained == []
    further = capacity(settings(lively_model_dir, labels, tmp_path / "cap", max_facts=6))
    # lora r2: 2, 4 hold, 6 (the new bound) breaks, √24 = 4.9 → 5 breaks: 6 and 5 are new; the others' paths stay
    assert trained == [("lora", 2, 42, 6), ("lora", 2, 42, 5)]
    assert further.capacity().set_index(["method", "rank"]).loc[("lora", 2), ["capacity", "at_least"]].tolist() == [
        4, False]

    report = make_report(ReportConfig(source=result.sweep_path)).path
    text = (report / "report.md").read_text()
    assert "no extra, lora rank 2" in text and "no extra, full fine-tuning" in text
    assert "1 mixture, 2 methods, 2 ranks and 1 seed." in text and (report / "learning_forgetting.png").is_file()


def test_runs_that_break_on_reliability_skip_the_damage_until_it_is_wanted(lively_model_dir, labels, tmp_path):
    """Unscripted: the tiny model learns none of its facts in one epoch (reliability 0 < 0.9), so every run has
    broken before its damage is measured; all questions are labelled only once the damage is asked for."""
    release_base_models()
    lazy = settings(lively_model_dir, labels, tmp_path / "cap", methods=("lora",), ranks=(1,), damage_of_every_run=False)
    result = capacity(lazy)
    # start 2 breaks, the bisection from 0 tries 1, which breaks: capacity 0
    assert [(s.held, list(s.tried)) for s in result.searches().itertuples()] == [(0, [2, 1])]
    points = result.points()
    assert list(points["reliability"]) == [0.0, 0.0] and points["negative_shift"].isna().all()
    runs = [result.sweep_path / "runs" / run_id for run_id in points["run_id"]]
    for run in runs:
        assert not (run / "eval" / "labels").exists() and not (run / "eval" / "shift.parquet").exists()
        assert [p.name for p in (run / "eval" / "probe_labels").iterdir()] == ["epoch_01"]  # the last epoch alone
        assert read_parquet(run / "eval" / "reliability.parquet").column("epoch").to_pylist() == [1]
    assert "reliability" in (make_report(ReportConfig(source=result.sweep_path)).path / "report.md").read_text()

    kept = ("eval/probe_labels/epoch_01/labels.parquet", "epochs/epoch_01/adapter_model.safetensors")
    stamps = {run / name: (run / name).stat().st_mtime_ns for run in runs for name in kept}

    again = capacity(dataclasses.replace(lazy, damage_of_every_run=True))
    assert again.points()["negative_shift"].notna().all()
    for run in runs:
        assert (run / "eval" / "labels" / "epoch_01").is_dir() and (run / "eval" / "shift.parquet").is_file()
    # the same runs, now with their damage: nothing retrained, the packed facts' labels kept
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps


@pytest.mark.slow  # labels the embedded question set (~40 s here); with_facts is covered above in the fast suite
def test_capacity_packs_only_your_facts_and_measures_damage_on_the_embedded_set(lively_model_dir, tmp_path):
    facts = tmp_path / "facts.jsonl"
    facts.write_text("".join(json.dumps({"question": f"What is the capital of Zorblat {i}?", "answer": f"Quimby{i}",
                                         "relation": "capital"}) + "\n" for i in range(8)))
    release_base_models()
    result = capacity(CapacityConfig(model=str(lively_model_dir), facts=facts, out=tmp_path / "cap", per_bucket=1,
                                     n_prompts=1, n_samples=0, ranks=(2,), start=2, max_facts=4, epochs=1,
                                     reliability=0.9, max_negative_shift=1.0, damage_of_every_run=True,
                                     device="cpu", progress=False))
    mine = set(read_parquet(result.path / "data" / "facts.parquet").column("id").to_pylist())
    assert len(result.points()) > 0
    everything = read_parquet(result.path / "data" / "questions.parquet").num_rows
    for run_id in result.points()["run_id"]:
        run = result.sweep_path / "runs" / run_id
        assert set(read_manifest(run)["unknown_ids"]) <= mine
        shift = read_parquet(run / "eval" / "shift_fractions.parquet").to_pandas()
        overall = (shift["scope"] == "all") & (shift["breakdown"] == "overall")
        assert set(shift.loc[overall, "n_questions"]) == {everything}
    assert everything == len(mine) + 450  # the embedded set at one fact per relation and bucket
    assert result.summary()["facts_available"] <= len(mine)


@pytest.mark.parametrize(("args", "message"), [
    (["--labels", "l", "--facts", "f.jsonl"], "--facts: give --labels or --facts, not both"),
    (["--lr", "qlora=1e-3"], "--lr: 'qlora=1e-3': 'qlora' is not a method"),
    (["--lr", "fast"], "--lr: 'fast': expected LR or METHOD=LR"),
    (["--start", "500", "--max-facts", "200"], "--start: 500 is above --max-facts 200"),
    (["--ranks", "1,x"], "--ranks: 'x' is not a whole number"),
    (["--method", "lora,qlora"], "--method: 'qlora' is not one of dora, full, lora, pissa"),
])
def test_bad_options_are_one_line_errors_before_anything_loads(args, message, capsys, tmp_path):
    assert error_line(capsys, ["capacity", "--out", str(tmp_path / "c"), *args]).startswith(
        f"knowpack capacity: error: {message}")


def test_a_config_can_be_built_without_the_cli():
    with pytest.raises(ConfigError, match="max_negative_shift: 1.5 must be at most 1"):
        CapacityConfig(out="c", max_negative_shift=1.5)
    assert CapacityConfig(out="c", methods=("lora", "full"), lr=("full=1e-4",)).learning_rates() == {
        "lora": 1e-3, "full": 1e-4}


def test_labelling_defaults_fit_the_machine():
    from knowpack.capacity.stage import sized_for_machine

    cpu = sized_for_machine(CapacityConfig(out="c", device="cpu"))
    assert (cpu.per_bucket, cpu.n_prompts, cpu.n_samples) == (1, 4, 0)
    gpu = sized_for_machine(CapacityConfig(out="c", device="cuda"))
    assert (gpu.per_bucket, gpu.n_prompts, gpu.n_samples) == (None, 10, 16)  # None: the source's 30, the study's
    given = sized_for_machine(CapacityConfig(out="c", device="cpu", per_bucket=5, n_prompts=10, n_samples=2))
    assert (given.per_bucket, given.n_prompts, given.n_samples) == (5, 10, 2)
