"""The sweep and report commands map their flags to the executors and configs; Ray stays optional."""

import argparse
import sys

import pytest
import yaml

import knowpack.sweep
from knowpack.errors import InputError, KnowpackError
from knowpack.report import cli as report_cli
from knowpack.sweep import cli as sweep_cli
from knowpack.sweep.local import LocalExecutor
from knowpack.sweep.ray_executor import RayExecutor, import_ray


def parse(argv):
    parser = argparse.ArgumentParser(prog="knowpack")
    subparsers = parser.add_subparsers(dest="command", required=True)
    sweep_cli.register(subparsers)
    report_cli.register(subparsers)
    return parser.parse_args(argv)


@pytest.fixture
def sweep_yaml(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"model": "m", "data": {"questions": "q.parquet", "labels": "l"},
                                    "grid": {"unknown": [1, 2]}}))
    return path


@pytest.fixture
def started(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(knowpack.sweep, "run_sweep",
                        lambda config, executor, overwrite: calls.append((config, executor, overwrite)) or tmp_path)
    return calls


def test_flags_pick_the_executor(sweep_yaml, started, tmp_path, capsys):
    args = parse(["sweep", str(sweep_yaml), "--out", str(tmp_path / "o")])
    args.func(args)
    config, executor, overwrite = started[-1]
    assert isinstance(executor, LocalExecutor) and config.out == tmp_path / "o" and len(config.runs()) == 2
    assert not overwrite
    assert "sweep done" in capsys.readouterr().out

    args = parse(["sweep", str(sweep_yaml), "--executor", "ray", "--address", "auto", "--workers", "4", "--overwrite"])
    args.func(args)
    executor = started[-1][1]
    assert isinstance(executor, RayExecutor) and (executor.address, executor.workers) == ("auto", 4)
    assert started[-1][2], "--overwrite reaches run_sweep"
    assert started[-1][0].out.name == "s", "default out: runs/<name>, the name defaulting to the file's stem"


def test_ray_flags_without_ray_executor_are_refused(sweep_yaml, started):
    args = parse(["sweep", str(sweep_yaml), "--workers", "2"])
    with pytest.raises(InputError, match="--workers and --cpus-per-worker need --executor ray"):
        args.func(args)
    with pytest.raises(KnowpackError, match="at least 1"):
        RayExecutor(workers=0)


def test_missing_ray_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(KnowpackError, match=r"Ray is not installed; pip install 'knowpack\[ray\]'"):
        import_ray()


def test_local_executor_does_not_import_ray(tmp_path):
    import subprocess

    code = ("import sys; import knowpack.sweep, knowpack.sweep.local, knowpack.sweep.cli; "
            "print('ray' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
