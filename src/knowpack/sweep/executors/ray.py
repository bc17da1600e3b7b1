"""The Ray executor: one actor per GPU (or per CPU slot), each holding the base model, runs sent to free actors.

Each actor loads the base model once and then takes runs one at a time; the driver hands the next pending run to
whichever actor finishes first, so a slow run never idles the other GPUs. Actors write straight into the sweep
folder, so on a multi-node cluster (``--address``) the sweep folder and the data must be on a filesystem every
node sees at the same path; the driver only keeps ``sweep.parquet`` current.

Ray is optional: it is imported when this executor runs, with a one-line error naming the extra to install.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from knowpack.config import Config, option
from knowpack.errors import KnowpackError
from knowpack.sweep.executors import register
from knowpack.sweep.runs import FAILED, RunResult, SweepJob, execute_run, release_base_models
from knowpack.sweep.spec import RunSpec


@dataclass
class RayOptions(Config):
    address: str | None = option(None, help="Ray cluster address (e.g. auto or ray://head:10001); default: start "
                                 "a local one", affects_results=False)
    workers: int | None = option(None, help="Ray actors (default: one per GPU, else one per --cpus-per-worker CPUs)",
                                 minimum=1, affects_results=False)
    cpus_per_worker: int = option(1, help="CPUs per Ray actor without GPUs", minimum=1, affects_results=False)


class SweepWorker:
    """A Ray actor's state: the base model, loaded once, on the GPU Ray assigned (CUDA_VISIBLE_DEVICES) or CPU."""

    def __init__(self, job: SweepJob, threads: int):
        import torch

        self.job = job
        self.loaded = job.load_model()
        if self.loaded.device.type == "cpu":
            # load_model uses every core; actors sharing a node must split them instead of oversubscribing.
            torch.set_num_threads(threads)

    def run(self, run: RunSpec) -> RunResult:
        return execute_run(self.loaded, self.job, run)

    def where(self) -> dict[str, Any]:
        """Node, process and device of this actor (for logs and tests: one actor per GPU / CPU slot)."""
        import socket

        return {"host": socket.gethostname(), "pid": os.getpid(), "device": str(self.loaded.device)}


@register
class RayExecutor:
    """Spreads runs over a Ray cluster: the local machine (started here) or an existing one at ``address``.

    ``workers`` defaults to one per GPU in the cluster or, without GPUs (or with ``device: cpu``), one per
    ``cpus_per_worker`` CPUs.
    """

    name = "ray"
    help = "one actor per GPU (or CPU slot) of a Ray cluster, each holding the base model"
    Options = RayOptions

    def __init__(self, options: RayOptions | None = None):
        options = options or RayOptions()
        self.address = options.address
        self.workers = options.workers
        self.cpus_per_worker = options.cpus_per_worker
        self.placements: list[dict[str, Any]] = []

    def run(self, job: SweepJob, runs: list[RunSpec], record: Callable[[RunResult], None]) -> None:
        if not runs:
            return
        ray = import_ray()
        release_base_models()
        started_here = not ray.is_initialized()
        if started_here:
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=True)
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = self.address or "a local cluster"
                raise KnowpackError(f"--address: cannot connect to or start Ray at {where} ({err})") from err
        try:
            self._dispatch(ray, job, runs, record)
        finally:
            if started_here:
                ray.shutdown()

    def _dispatch(self, ray, job: SweepJob, runs: list[RunSpec], record: Callable[[RunResult], None]) -> None:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        on_gpu = gpus > 0 and not (job.device or "").startswith("cpu")
        if on_gpu:
            slots, options = gpus, {"num_gpus": 1, "num_cpus": 1}
        else:
            slots = max(1, int(resources.get("CPU", 1)) // self.cpus_per_worker)
            options = {"num_cpus": self.cpus_per_worker}
        count = min(self.workers or slots, len(runs))
        if count > slots:
            unit = "GPU" if on_gpu else f"slot of {self.cpus_per_worker} CPU(s)"
            raise KnowpackError(f"--workers: {count} workers asked but the cluster has {slots} {unit}")
        actor_class = ray.remote(SweepWorker)
        actors = [actor_class.options(**options).remote(job, self.cpus_per_worker) for _ in range(count)]
        self.placements = []
        pending = deque(runs)
        in_flight: dict[Any, tuple[Any, RunSpec]] = {}

        def hand_out(actor) -> None:
            if pending:
                run = pending.popleft()
                in_flight[actor.run.remote(run)] = (actor, run)

        try:
            self.placements = ray.get([actor.where.remote() for actor in actors])
            for actor in actors:
                hand_out(actor)
            while in_flight:
                finished, _ = ray.wait(list(in_flight), num_returns=1)
                actor, run = in_flight.pop(finished[0])
                try:
                    result = ray.get(finished[0])
                except ray.exceptions.RayActorError as err:
                    # The actor died (out of memory, node lost): record the run and carry on with the others.
                    record(RunResult(run.run_id, FAILED, 0.0, f"worker died: {str(err).splitlines()[0][:300]}"))
                    actors.remove(actor)
                    if not actors:
                        for _, left in in_flight.values():
                            pending.appendleft(left)
                        raise KnowpackError(f"every Ray worker died; {len(pending)} run(s) were not done") from err
                    continue
                record(result)
                hand_out(actor)
        except ray.exceptions.RayActorError as err:
            raise KnowpackError(f"a Ray worker could not load the model ({str(err).splitlines()[0][:300]})") from err
        finally:
            for actor in actors:
                ray.kill(actor)


def import_ray():
    """Ray, or a one-line error saying how to get it (the local executor never needs it)."""
    try:
        import ray
    except ImportError as err:
        raise KnowpackError(
            "--executor ray: Ray is not installed; pip install 'knowpack[ray]' (or use --executor local)"
        ) from err
    return ray
