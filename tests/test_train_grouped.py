"""Runs trained together (``train.grouped``) against the same runs trained alone, on the tiny model: equal
adapters, optimizer states and losses without dropout; with dropout, a run's result does not depend on its group;
a group resumes runs that stopped after different epochs; one diverging run leaves the others training."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
import torch
from test_train_lora import TEMPLATE, adapter, labels, loaded, losses, optimizer_state  # noqa: F401 - fixtures

from knowpack.errors import InputError
from knowpack.runfolder import read_manifest
from knowpack.train import folder as run_files
from knowpack.train.grouped import train_group
from knowpack.train.packing import pack
from knowpack.train.stage import TrainConfig, run_loaded


def config(labels, out, **overrides) -> TrainConfig:
    # three runs of different sizes (so the group's last steps carry fewer runs), seeds and mixtures
    options = dict(unknown=6, extra=("highly-known:1",), epochs=3, batch_size=4, rank=2, alpha=4.0, lr=2e-2,
                   seed=7, template=TEMPLATE, dropout=0.0, progress=False)
    return TrainConfig(labels=labels, out=out, **{**options, **overrides})


RUNS = [dict(), dict(unknown=9, seed=3, extra=()), dict(unknown=4, seed=11, rank=1, extra=("highly-known:2",))]


def assert_close(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-5, msg=key)


def test_packed_groups_are_contiguous_spans():
    rows = [([1, 2, 3, 4], 2), ([5, 6, 7], 1), ([8, 9], 1), ([10, 11, 12, 13, 14], 3)]
    batch = pack(rows, "answer", torch.device("cpu"), lane_tokens=6, groups=[2, 2])
    ids = batch.input_ids[0].tolist()
    first, second = batch.spans
    assert (first.start, second.end) == (0, len(ids)) and first.end == second.start
    # each group's lanes hold its rows only: its real tokens are its rows, in order
    real = [ids[first.start:first.end][i] for i in first.real.tolist()]
    assert real == [1, 2, 3, 4, 5, 6, 7]
    second_real = ids[second.start:second.end] if second.real is None else \
        [ids[second.start:second.end][i] for i in second.real.tolist()]
    assert second_real == [8, 9, 10, 11, 12, 13, 14]
    labels = batch.labels.tolist()
    assert labels[first.label_start:first.label_end] == [3, 4, 6, 7]
    assert labels[second.label_start:second.label_end] == [9, 13, 14]


def test_grouped_runs_equal_solo_runs(loaded, labels, tmp_path):  # noqa: F811
    solo = [run_loaded(loaded, config(labels, tmp_path / f"solo{i}", **kw)).path for i, kw in enumerate(RUNS)]
    results = train_group(loaded, [config(labels, tmp_path / f"group{i}", **kw) for i, kw in enumerate(RUNS)])
    grouped = [result.path for result in results]
    for alone, together in zip(solo, grouped):
        for epoch in (1, 2, 3):
            assert_close(adapter(alone, epoch), adapter(together, epoch))
            assert_close(optimizer_state(alone, epoch), optimizer_state(together, epoch))
            name = run_files.epoch_name(epoch)
            assert (json.loads((alone / "epochs" / name / "adapter_config.json").read_text())
                    == json.loads((together / "epochs" / name / "adapter_config.json").read_text()))
        torch.testing.assert_close(torch.tensor(losses(alone)), torch.tensor(losses(together)), rtol=1e-5, atol=1e-6)
        assert (pq.read_table(alone / run_files.TRAIN_SET_FILE).equals(pq.read_table(together / run_files.TRAIN_SET_FILE)))
        assert read_manifest(together)["complete"]
    # the loaded model is left as it was: no adapter, no patched forward, a solo run still matches
    assert not getattr(loaded.model, "peft_config", None)
    again = run_loaded(loaded, config(labels, tmp_path / "again", **RUNS[0])).path
    assert_close(adapter(solo[0], 3), adapter(again, 3))


def test_dropout_draws_do_not_depend_on_the_group(loaded, labels, tmp_path):  # noqa: F811
    with_one = train_group(loaded, [config(labels, tmp_path / "a0", dropout=0.2, **RUNS[0]),
                                    config(labels, tmp_path / "a1", dropout=0.2, **RUNS[1])])
    with_other = train_group(loaded, [config(labels, tmp_path / "b2", dropout=0.2, **RUNS[2]),
                                      config(labels, tmp_path / "b0", dropout=0.2, **RUNS[0])])
    assert_close(adapter(with_one[0].path, 3), adapter(with_other[1].path, 3))
    no_dropout = run_loaded(loaded, config(labels, tmp_path / "plain", **RUNS[0])).path
    assert not torch.allclose(adapter(no_dropout, 3)[next(iter(adapter(no_dropout, 3)))],
                              adapter(with_one[0].path, 3)[next(iter(adapter(no_dropout, 3)))])


def test_group_resumes_runs_stopped_at_different_epochs(loaded, labels, tmp_path):  # noqa: F811
    configs = [config(labels, tmp_path / f"run{i}", **kw) for i, kw in enumerate(RUNS[:2])]
    reference = [result.path for result in train_group(loaded, configs)]
    expected = [adapter(path, 3) for path in reference]
    # run0 lost epochs 2-3, run1 lost epoch 3; the manifests say incomplete
    for path, keep in zip(reference, (1, 2)):
        for epoch in range(keep + 1, 4):
            shutil.rmtree(path / "epochs" / run_files.epoch_name(epoch))
        manifest = json.loads((path / "manifest.json").read_text())
        manifest["complete"] = False
        (path / "manifest.json").write_text(json.dumps(manifest))
    resumed = train_group(loaded, configs)
    for result, before in zip(resumed, expected):
        assert_close(before, adapter(result.path, 3))
        assert [row["epoch"] for row in pq.read_table(result.path / run_files.TRAIN_LOG_FILE).to_pylist()] == \
            sorted(row["epoch"] for row in pq.read_table(result.path / run_files.TRAIN_LOG_FILE).to_pylist())


def test_a_diverging_run_fails_alone(loaded, labels, tmp_path):  # noqa: F811
    results = train_group(loaded, [config(labels, tmp_path / "fine", **RUNS[0]),
                                   config(labels, tmp_path / "wild", lr=1e30, alpha=1e6, **RUNS[1])])
    assert read_manifest(results[0].path)["complete"]
    alone = run_loaded(loaded, config(labels, tmp_path / "alone", **RUNS[0])).path
    assert_close(adapter(alone, 3), adapter(results[0].path, 3))  # the wild run never reached it
    assert isinstance(results[1], InputError) and "training diverged at epoch" in str(results[1])
    assert not read_manifest(tmp_path / "wild")["complete"]
