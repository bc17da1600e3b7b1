"""Sweep files: parsing, checks that name the bad key, expansion and stable run ids."""

from pathlib import Path

import pytest
import yaml

from knowpack.errors import InputError
from knowpack.sweep.spec import expand_range, load_sweep, mixture_extra, mixture_label

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write(tmp_path, document, name="grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document) if not isinstance(document, str) else document)
    return path


def base(**grid):
    return {
        "model": "smollm2-135m",
        "data": {"questions": "data/questions.parquet", "labels": "data/labels"},
        "grid": {"unknown": [1, 10], **grid},
    }


def test_grid_expands_to_cross_product_with_canonical_mixtures(tmp_path):
    config = load_sweep(write(tmp_path, base(mixtures=["none", "highly-known:1", "paraphrase:2 + highly-known:1"],
                                             seed=[1, 2], lr=1e-3, targets=["mlp", "q_proj,v_proj"])))
    runs = config.runs()
    assert len(runs) == 2 * 3 * 2 * 2
    assert config.grid["mixtures"] == ["none", "highly-known:1", "highly-known:1+paraphrase:2"]
    assert config.grid["targets"] == ["mlp", "q_proj,v_proj"]
    assert runs[0].params == {"unknown": 1, "mixture": "none", "targets": "mlp", "lr": 0.001, "seed": 1}
    assert runs[-1].extra == ["highly-known:1", "paraphrase:2"]
    assert len({r.run_id for r in runs}) == len(runs)
    assert config.questions == (tmp_path / "data/questions.parquet").resolve(), "paths are relative to the YAML"
    assert config.out == Path("runs/grid")


def test_run_ids_are_stable_across_grid_order_and_growth(tmp_path):
    small = load_sweep(write(tmp_path, base(seed=[1, 2]), "a.yaml")).runs()
    grown = load_sweep(write(tmp_path, {**base(seed=[3, 2, 1]), "grid": {"unknown": [10, 1, 50], "seed": [3, 2, 1]}},
                             "b.yaml")).runs()
    ids = {(r.params["unknown"], r.params["seed"]): r.run_id for r in grown}
    for run in small:
        assert ids[(run.params["unknown"], run.params["seed"])] == run.run_id
    assert small[0].run_id.startswith("u1-none-s1-")
    changed = load_sweep(write(tmp_path, {**base(seed=[1, 2]), "train": {"batch_size": 4}}, "c.yaml")).runs()
    assert changed[0].run_id != small[0].run_id, "fixed options are part of what a run is"


def test_ranges_and_mixture_ranges(tmp_path):
    config = load_sweep(write(tmp_path, {**base(), "grid": {
        "unknown": {"start": 10, "stop": 30, "step": 10},
        "lr": {"start": "1e-4", "stop": 1e-2, "num": 3, "log": True},
        "rank": {"start": 1, "stop": 8, "num": 4},
        "mixtures": {"kinds": ["highly-known", "paraphrase"], "ratios": [1, 10]},
    }}))
    assert config.grid["unknown"] == [10, 20, 30]
    assert config.grid["lr"] == pytest.approx([1e-4, 1e-3, 1e-2])
    assert config.grid["rank"] == [1, 3, 6, 8]
    assert config.grid["mixtures"] == ["none", "highly-known:1", "highly-known:10", "paraphrase:1", "paraphrase:10"]
    assert expand_range({"start": 0.1, "stop": 0.3, "step": 0.1}, "dropout") == pytest.approx([0.1, 0.2, 0.3])


def test_exponent_without_a_dot_is_a_number(tmp_path):
    """PyYAML reads 1e-3 as a string; the sweep file still means a learning rate."""
    config = load_sweep(write(tmp_path, "model: m\ndata: {questions: q, labels: l}\ngrid: {unknown: 1, lr: [1e-3, 5e-4]}\n"))
    assert config.grid["lr"] == [0.001, 0.0005]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({**base(), "epochz": 3}, r"^.*epochz: unknown key"),
        ({**base(), "grid": {"unknown": [10], "seeds": [1]}}, r"grid\.seeds: unknown key"),
        ({**base(), "grid": {"unknown": [-5]}}, r"grid\.unknown: -5 must be at least 1"),
        ({**base(), "grid": {"unknown": [10, 10]}}, r"grid\.unknown: 10 is listed twice"),
        ({**base(), "grid": {"unknown": [1], "rank": 0}}, r"grid\.rank: 0 must be at least 1"),
        ({**base(), "grid": {"unknown": [1], "lr": "fast"}}, r"grid\.lr: 'fast' is not a number"),
        ({**base(), "grid": {"unknown": [1], "loss_on": "prompt"}}, r"grid\.loss_on: 'prompt' is not one of answer, all"),
        ({**base(), "grid": {"unknown": [1], "dropout": 1.5}}, r"grid\.dropout"),
        ({**base(), "grid": {"unknown": [1], "mixtures": ["famous:3"]}}, r"grid\.mixtures: unknown kind 'famous'"),
        ({**base(), "grid": {"unknown": [1], "mixtures": ["paraphrase:0"]}}, r"ratio of at least 1"),
        ({**base(), "grid": {"unknown": {"start": 5, "stop": 1, "step": 1}}}, r"grid\.unknown: stop 1 is below"),
        ({**base(), "grid": {"unknown": [1], "loss_on": {"start": 1}}}, r"grid\.loss_on: takes a value or a list"),
        ({**base(), "grid": {"rank": [1]}}, r"grid\.unknown: missing"),
        ({**base(rank=[1, 2]), "train": {"rank": 4}}, r"train\.rank: also a grid parameter"),
        ({**base(), "train": {"rank": 0}}, r"train\.rank: 0 must be at least 1"),
        ({**base(), "train": {"batch_size": [4]}}, r"train\.batch_size: \[4\] is not a whole number"),
        ({**base(), "evaluate": {"limit": -1}}, r"evaluate\.limit: -1 must be at least 1"),
        ({**base(), "evaluate": {"benchmarks": "none,mmlu"}}, r"'none' cannot be combined"),
        ({**base(), "train": {"out": "x"}}, r"train\.out: cannot be set in a sweep"),
        ({**base(), "data": {"questions": "q.parquet"}}, r"data\.labels: missing"),
        ({**base(), "data": {"labels": "l", "make": {"labels": {}}}}, r"either labels or make\.labels"),
        ({**base(), "data": {"labels": "l", "make": {"facts": {}}}}, r"data\.make\.facts: unknown key"),
        ({**base(), "name": "has space"}, r"name: 'has space'"),
        ({**base(), "kernels": "fast"}, r"kernels: 'fast' is not one of auto, eager, liger"),
        ({"model": "m", "grid": {"unknown": [1]}}, r"data: missing"),
        ("- just\n- a list\n", r"must be a mapping"),
        ("grid: [unclosed\n", r"not valid YAML \(line"),
    ],
)
def test_bad_sweep_files_give_one_line_naming_the_key(tmp_path, document, message):
    with pytest.raises(InputError, match=message) as caught:
        load_sweep(write(tmp_path, document))
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / "grid.yaml"))


def test_yaml_is_read_with_a_safe_loader(tmp_path):
    path = write(tmp_path, "model: !!python/object/apply:os.system ['echo pwned']\ndata: {}\ngrid: {}\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_sweep(path)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(InputError, match="sweep file not found"):
        load_sweep(tmp_path / "nope.yaml")


def test_mixture_wording():
    assert mixture_label("none") == "no extra"
    assert mixture_label("paraphrase:10") == "+10 paraphrases"
    assert mixture_label("highly-known:1+paraphrase:1") == "+1 HighlyKnown +1 paraphrase"
    assert mixture_extra("highly-known:1+paraphrase:1") == ["highly-known:1", "paraphrase:1"]


def test_example_grids_parse(tmp_path):
    study = load_sweep(EXAMPLES / "study_grid.yaml")
    runs = study.runs()
    assert len(runs) == 6 * 5 * 3
    assert {r.params["unknown"] for r in runs} == {1, 10, 50, 100, 500, 3000}
    assert study.grid["mixtures"] == ["none", "highly-known:1", "highly-known:10", "paraphrase:1", "paraphrase:10"]
    assert study.grid["seed"] == [42, 1337, 10824] and study.protocol == "study"
    assert study.model == "meta-llama/Llama-3.1-8B-Instruct"
    cpu = load_sweep(EXAMPLES / "cpu_grid.yaml")
    assert cpu.model == "smollm2-135m" and cpu.make_labels is not None
    assert 4 <= len(cpu.runs()) <= 40


def test_methods_are_a_grid_key_like_any_training_option(tmp_path):
    config = load_sweep(write(tmp_path, base(method=["lora", "dora", "pissa", "full"], lr=1e-5)))
    assert [run.params["method"] for run in config.runs()] == ["lora", "dora", "pissa", "full"] * 2
    with pytest.raises(InputError, match="grid.method: 'qlora' is not one of dora, full, lora, pissa"):
        load_sweep(write(tmp_path, base(method=["qlora"]), "bad.yaml"))


def test_a_list_of_grids_is_the_union_of_their_runs(tmp_path):
    document = {**base(), "grid": [{"unknown": [10, 20], "rank": 1}, {"unknown": [20, 80], "rank": [1, 16]}]}
    runs = load_sweep(write(tmp_path, document)).runs()
    points = [(run.params["unknown"], run.params["rank"]) for run in runs]
    assert points == [(10, 1), (20, 1), (20, 16), (80, 1), (80, 16)]  # (20, 1) is in both grids: one run
    single = load_sweep(write(tmp_path, {**base(), "grid": {"unknown": 20, "rank": 16}}, "one.yaml")).runs()[0]
    assert single.run_id == runs[2].run_id, "a run's id does not depend on the grid that lists it"
    with pytest.raises(InputError, match=r"grid\[1\]: names unknown, mixtures; every grid of the list must name "
                                         r"the same keys \(unknown, rank, mixtures\)"):
        load_sweep(write(tmp_path, {**base(), "grid": [{"unknown": 1, "rank": 1}, {"unknown": 2}]}, "keys.yaml"))
    with pytest.raises(InputError, match=r"grid\[1\].rank: 0 must be at least 1"):
        load_sweep(write(tmp_path, {**base(), "grid": [{"unknown": 1, "rank": 1}, {"unknown": 2, "rank": 0}]},
                         "rank.yaml"))
