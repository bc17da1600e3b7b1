"""``knowpack sweep sweep.yaml [--executor local|ray] [--address ADDR] [--workers N] [--out DIR]``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="run a grid of packing runs (train + evaluate) from a YAML file; resumable, local or on Ray",
        description="Run every point of a sweep file's grid: finished runs are skipped, half-finished ones resume "
        "from their last complete epoch. See examples/cpu_grid.yaml and examples/study_grid.yaml.",
    )
    parser.add_argument("sweep_file", metavar="SWEEP_YAML", help="the sweep file (model, data, train, evaluate, grid)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local: one process, runs in order (default); ray: one actor per GPU or CPU slot")
    parser.add_argument("--address", help="Ray cluster address (e.g. auto or ray://head:10001); default: start a local one")
    parser.add_argument("--workers", type=int, help="Ray actors (default: one per GPU, else one per --cpus-per-worker CPUs)")
    parser.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs per Ray actor without GPUs (default 1)")
    parser.add_argument("--out", help="sweep folder (default runs/<name>)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run Python code shipped with a hub model (as trust_remote_code: true in the file)")
    parser.add_argument("--overwrite", action="store_true",
                        help="empty a sweep folder made with another model, data or fixed options (its runs are lost)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from knowpack.errors import InputError
    from knowpack.sweep import load_sweep, run_sweep
    from knowpack.sweep.local import LocalExecutor
    from knowpack.sweep.ray_executor import RayExecutor

    if args.executor == "local" and (args.address or args.workers or args.cpus_per_worker != 1):
        raise InputError("--address, --workers and --cpus-per-worker need --executor ray")
    config = load_sweep(args.sweep_file, out=args.out)
    config.trust_remote_code = config.trust_remote_code or args.trust_remote_code
    executor = (
        RayExecutor(address=args.address, workers=args.workers, cpus_per_worker=args.cpus_per_worker)
        if args.executor == "ray"
        else LocalExecutor()
    )
    out = run_sweep(config, executor=executor, overwrite=args.overwrite)
    print(f"sweep done: {out}  (index: {out / 'sweep.parquet'}; report: knowpack report {out})")
