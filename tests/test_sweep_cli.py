"""The sweep command maps its flags to the executors and configs; Ray stays optional."""

import sys

import pytest
import yaml

import knowpack.sweep.driver
from knowpack.cli import main
from knowpack.errors import KnowpackError
from knowpack.sweep.executors.local import LocalExecutor
from knowpack.sweep.executors.ray import RayExecutor, RayOptions, import_ray
from knowpack.sweep.folder import Sweep


@pytest.fixture
def sweep_yaml(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"model": "m", "data": {"questions": "q.parquet", "labels": "l"},
                                    "grid": {"unknown": [1, 2]}}))
    return path


@pytest.fixture
def started(monkeypatch, tmp_path):
    calls = []

    class Finished(Sweep):
        def __init__(self, path):
            self.path = path

    monkeypatch.setattr(knowpack.sweep.driver, "run_sweep",
                        lambda spec, executor, overwrite: calls.append((spec, executor, overwrite)) or Finished(tmp_path))
    return calls


def test_flags_pick_the_executor(sweep_yaml, started, tmp_path, capsys):
    assert main(["sweep", str(sweep_yaml), "--out", str(tmp_path / "o")]) == 0
    spec, executor, overwrite = started[-1]
    assert isinstance(executor, LocalExecutor) and spec.out == tmp_path / "o" and len(spec.runs()) == 2
    assert not overwrite
    assert "sweep done" in capsys.readouterr().out

    assert main(["sweep", str(sweep_yaml), "--executor", "ray", "--address", "auto", "--workers", "4",
                 "--overwrite"]) == 0
    executor = started[-1][1]
    assert isinstance(executor, RayExecutor) and (executor.address, executor.workers) == ("auto", 4)
    assert started[-1][2], "--overwrite reaches run_sweep"
    assert started[-1][0].out.name == "s", "default out: runs/<name>, the name defaulting to the file's stem"


def test_ray_flags_without_ray_executor_are_refused(sweep_yaml, started, capsys):
    assert main(["sweep", str(sweep_yaml), "--workers", "2"]) == 2
    assert "--workers: applies to executor ray only" in capsys.readouterr().err
    with pytest.raises(KnowpackError, match="workers: 0 must be at least 1"):
        RayOptions(workers=0)


def test_missing_ray_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(KnowpackError, match=r"Ray is not installed; pip install 'knowpack\[ray\]'"):
        import_ray()


def test_local_executor_does_not_import_ray(tmp_path):
    import subprocess

    code = ("import sys; import knowpack.cli, knowpack.sweep.driver, knowpack.sweep.executors.local; "
            "knowpack.cli.build_parser(); print('ray' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
