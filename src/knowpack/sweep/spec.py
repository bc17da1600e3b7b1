"""sweep.yaml -> a typed ``SweepSpec`` -> the list of runs it stands for, each with a stable id.

A sweep file names the model, the data (existing questions/labels, or how to make them), fixed training and
evaluation options, and a ``grid``: for each sweepable parameter a value, a list of values or a range. The grid
expands to the cross product of its values; every run gets an id hashed from everything that shapes its result,
so the same run keeps its id (and its finished folder) when a grid grows or is reordered.

The YAML is read safely (``knowpack.yamlfile``: no tags, duplicate keys refused, aliases bounded), a grid larger
than ``max_runs`` (default 10 000) is refused before it is expanded, and this module checks the envelope (keys, shapes, ranges); the values
are checked by the stage configs themselves: every run's ``TrainConfig`` and ``EvaluateConfig`` and the data
stages' configs are built (``SweepSpec.check``) before anything runs, so a value the CLI refuses is refused here
with the same message, naming the key it came from.

Schema (paths relative to the YAML file; see examples/study_grid.yaml and examples/cpu_grid.yaml)::

    name: my-grid                      # optional; default the file's stem; the sweep folder is runs/<name>
    model: smollm2-135m                # hub id, model folder, .gguf file or embedded model name
    device: cuda | cpu                 # optional (default: cuda if available); dtype: optional (bfloat16, ...)
    kernels: auto | liger | eager      # optional (default auto: Liger's fused kernels on a GPU where installed)
    trust_remote_code: false
    data:                              # questions + labels, either given ...
      questions: path/questions.parquet
      labels: path/label_folder
      make:                            # ... or made in SWEEP_DIR/data/ (the stages' config fields)
        questions: {source: embedded, per_bucket: 8}
        paraphrases: {k: 13}           # optional: model-written paraphrases before labelling
        labels: {n_prompts: 10, n_samples: 16}
    protocol: study                    # optional: the study's settings wherever the file sets none
    train: {batch_size: 16, allow_repeat: false, extra_pool: path, ...}   # fixed TrainConfig fields
    evaluate: {benchmarks: [mmlu], limit: 100, ...}                       # fixed EvaluateConfig fields
    grid:                              # each: a value, a list, or a range
      unknown: [1, 10, 50]             # required; range: {start: 10, stop: 50, step: 20}
      mixtures: [none, highly-known:10, paraphrase:1 + highly-known:1]   # or {kinds: [...], ratios: [...], none: true}
      rank: 1                          # any TrainConfig option that shapes results: method, alpha, rslora,
      lr: {start: 1.0e-4, stop: 1.0e-2, num: 3, log: true}              #  dropout, targets, loss_on, lr, epochs,
      epochs: 10                       #  seed, batch_size, schedule, …
      seed: [1, 2, 3]

``grid`` may also be a list of such grids naming the same keys: the sweep is the union of their runs (a point in
two of them is one run), e.g. other sizes for each rank: ``[{unknown: [10, 20], rank: 1}, {unknown: [80], rank: 16}]``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowpack.config import ConfigError, _parts, field_types
from knowpack.errors import InputError
from knowpack.kernels import AUTO, KERNEL_SETS
from knowpack.runfolder import stable_hash
from knowpack.train.stage import EXTRA_KINDS, TARGET_PRESETS, TrainConfig
from knowpack.yamlfile import load_yaml

TOP_LEVEL_KEYS = ("name", "model", "protocol", "device", "dtype", "kernels", "trust_remote_code", "max_runs", "data",
                  "train", "evaluate", "grid")
MAX_RUNS = 10_000  # a larger grid is almost always a typo (a range's step); raise max_runs to mean it
DATA_KEYS = ("questions", "labels", "make")
MAKE_KEYS = ("questions", "paraphrases", "labels")
MIXTURE_RANGE_KEYS = ("kinds", "ratios", "none")
RANGE_KEYS = ("start", "stop", "step", "num", "log")
# TrainConfig / EvaluateConfig fields the sweep fills in itself: setting them would break the folder layout.
SET_BY_SWEEP = {"train": ("labels", "questions", "out", "model", "device", "dtype", "kernels", "trust_remote_code",
                          "overwrite", "progress", "extra"),
                "evaluate": ("run", "model", "out", "device", "dtype", "kernels", "trust_remote_code", "overwrite",
                             "progress")}
# Options that name files: resolved against the sweep file's folder like the data paths.
PATH_OPTIONS = {"train": ("extra_pool", "pack_from", "pool"), "evaluate": ("benchmarks_dir",)}


def grid_parameters() -> dict[str, Any]:
    """Grid keys besides ``mixtures``: every TrainConfig field that shapes results (name -> its type), in the
    config's order but ``seed`` last, so a grid's runs vary the seed fastest."""
    hints = field_types(TrainConfig)
    names = [f.name for f in dataclasses.fields(TrainConfig)
             if f.metadata.get("affects_results", True) and f.name not in SET_BY_SWEEP["train"]]
    return {name: _parts(hints[name])[0] for name in [*(n for n in names if n != "seed"), "seed"]}


def as_number(value: Any) -> float | None:
    """A finite number, or None. Strings count: PyYAML reads ``1e-3`` (no dot) as the string '1e-3'."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------- config


@dataclass
class SweepSpec:
    """A parsed sweep file. Paths are resolved against the YAML file's folder; ``out`` against the caller's."""

    name: str
    model: str
    out: Path
    grid: dict[str, list[Any]] | list[dict[str, list[Any]]]  # one grid, or several whose runs are united
    questions: Path | None = None
    labels: Path | None = None
    make_questions: dict[str, Any] | None = None
    make_labels: dict[str, Any] | None = None
    train: dict[str, Any] = field(default_factory=dict)
    evaluate: dict[str, Any] = field(default_factory=dict)
    make_paraphrases: dict[str, Any] | None = None
    protocol: str | None = None
    max_runs: int = MAX_RUNS
    device: str | None = None
    dtype: str | None = None
    kernels: str = "auto"  # knowpack.kernels
    trust_remote_code: bool = False
    progress: bool = True  # the stages' bars (not a sweep-file key: the command's --no-progress)
    source: Path | None = None

    @property
    def grids(self) -> list[dict[str, list[Any]]]:
        return [self.grid] if isinstance(self.grid, dict) else list(self.grid)

    def runs(self) -> list[RunSpec]:
        sizes = [{key: len(values) for key, values in grid.items()} for grid in self.grids]
        count = sum(math.prod(grid.values()) for grid in sizes)
        if count > self.max_runs:
            product = " + ".join(" × ".join(f"{n} {key}" for key, n in grid.items() if n > 1) or "1" for grid in sizes)
            raise InputError(f"grid: {count:,} runs ({product}), more than max_runs {self.max_runs:,}; raise "
                             "max_runs in the sweep file (or pass --max-runs) if you mean it")
        return expand(self)

    def train_config(self, run: RunSpec, **paths: Any) -> TrainConfig:
        """The run's TrainConfig (``paths``: labels, questions, out), checked by TrainConfig itself; an error names
        the grid or train key the value came from."""
        values = {k: v for k, v in run.params.items() if k != "mixture"}
        try:
            return TrainConfig.from_dict({**run.train, **values}, protocol=self.protocol, model=self.model,
                                         device=self.device, dtype=self.dtype, kernels=self.kernels,
                                         extra=tuple(run.extra), progress=self.progress, **paths)
        except ConfigError as err:
            key = err.name.split(".")[-1]
            raise err.renamed(f"{'grid' if key in values else 'train'}.{key}") from None

    def evaluate_config(self, run: RunSpec, run_dir: Path):
        from knowpack.evaluate.stage import EvaluateConfig

        return EvaluateConfig.from_dict(run.evaluate, where="evaluate", protocol=self.protocol, run=run_dir,
                                        device=self.device, dtype=self.dtype, kernels=self.kernels,
                                        progress=self.progress)

    def data_configs(self, sweep_dir: Path):
        """The questions, paraphrase and label stage configs the sweep makes its data with, in that order (None
        for what the file gives): labels are made on the paraphrased set, the set every run trains on."""
        from knowpack.kg.stage import QuestionsConfig
        from knowpack.paraphrase.stage import ParaphraseConfig
        from knowpack.probe.stage import LabelConfig

        data = sweep_dir / "data"
        questions = None
        if self.make_questions is not None:
            questions = QuestionsConfig.from_dict(self.make_questions, where="data.make.questions",
                                                  out=data / "questions", progress=self.progress)
        source = self.questions or data / "questions"
        paraphrases = None
        if self.make_paraphrases is not None:
            paraphrases = ParaphraseConfig.from_dict(self.make_paraphrases, where="data.make.paraphrases",
                                                     questions=source, out=data / "paraphrases", model=self.model,
                                                     progress=self.progress)
            source = data / "paraphrases"
        labels = None
        if self.make_labels is not None:
            labels = LabelConfig.from_dict(self.make_labels, where="data.make.labels", protocol=self.protocol,
                                           model=self.model, questions=source, out=data / "labels",
                                           progress=self.progress)
        return questions, paraphrases, labels

    def check(self) -> None:
        """Build every stage config of the sweep (data, and each run's train and evaluate) before anything runs, so
        a bad value stops the sweep at once with the config's own one-line error naming its key."""
        self.data_configs(Path("sweep"))
        runs = self.runs()
        for run in runs:
            self.train_config(run, labels=Path("labels"), out=Path("run"))
        if runs:
            self.evaluate_config(runs[0], Path("run"))  # the same options for every run


@dataclass(frozen=True)
class RunSpec:
    """One point of the grid: its id, its grid values (``mixture`` as a string) and the stage options."""

    run_id: str
    params: dict[str, Any]
    train: dict[str, Any]
    evaluate: dict[str, Any]

    @property
    def extra(self) -> list[str]:
        return mixture_extra(self.params["mixture"])


def load_sweep(path: str | Path, out: str | Path | None = None, max_runs: int | None = None) -> SweepSpec:
    """Read and check a sweep file; ``out`` (default ``runs/<name>``) is where the sweep folder goes; ``max_runs``
    overrides the file's cap on the grid's size."""
    source = Path(path)
    if not source.is_file():
        raise InputError(f"{source}: sweep file not found")
    document = load_yaml(source)
    if not isinstance(document, dict):
        raise InputError(f"{source}: a sweep file must be a mapping of keys (name, model, data, grid, ...)")
    try:
        spec = parse_sweep(document, base=source.parent, default_name=source.stem, out=out, source=source)
        if max_runs is not None:
            spec.max_runs = max_runs
        spec.check()
    except InputError as err:
        raise InputError(f"{source}: {err}") from err
    return spec


def parse_sweep(
    document: Mapping[str, Any],
    *,
    base: Path,
    default_name: str,
    out: str | Path | None = None,
    source: Path | None = None,
) -> SweepSpec:
    _refuse_unknown(document, TOP_LEVEL_KEYS, "")
    for required in ("model", "data", "grid"):
        if required not in document:
            raise InputError(f"{required}: missing (a sweep needs model, data and grid)")
    name = document.get("name", default_name)
    if not isinstance(name, str) or not re.fullmatch(r"\w[\w.\-]*", name):  # no '..': runs/<name> stays in runs/
        raise InputError(f"name: {name!r} must be letters, digits, '.', '-' or '_', starting with a letter or digit")
    model = document["model"]
    if not isinstance(model, str) or not model.strip():
        raise InputError("model: must be a model id, a folder, a .gguf file or an embedded model name")
    for key in ("device", "dtype"):
        if document.get(key) is not None and not isinstance(document[key], str):
            raise InputError(f"{key}: must be a string such as 'cuda', 'cpu' or 'bfloat16'")
    kernels = document.get("kernels", AUTO)
    if kernels != AUTO and kernels not in KERNEL_SETS:
        raise InputError(f"kernels: {kernels!r} is not one of {', '.join([AUTO, *KERNEL_SETS.names()])}")
    trust = document.get("trust_remote_code", False)
    if not isinstance(trust, bool):
        raise InputError("trust_remote_code: must be true or false")
    max_runs = document.get("max_runs", MAX_RUNS)
    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
        raise InputError(f"max_runs: {max_runs!r} must be a whole number of at least 1")
    protocol = document.get("protocol")
    if protocol is not None:
        from knowpack.protocols import PROTOCOLS, STUDY_SEEDS

        if protocol not in PROTOCOLS:
            raise InputError(f"protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")

    data = _mapping(document["data"], "data")
    _refuse_unknown(data, DATA_KEYS, "data.")
    make = _mapping(data.get("make") or {}, "data.make")
    _refuse_unknown(make, MAKE_KEYS, "data.make.")
    questions = _path(data.get("questions"), base, "data.questions")
    labels = _path(data.get("labels"), base, "data.labels")
    make_questions = _mapping(make["questions"], "data.make.questions") if "questions" in make else None
    make_paraphrases = _mapping(make["paraphrases"], "data.make.paraphrases") if "paraphrases" in make else None
    make_labels = _mapping(make["labels"], "data.make.labels") if "labels" in make else None
    if questions is not None and make_questions is not None:
        raise InputError("data: give either questions or make.questions, not both")
    if labels is not None and make_labels is not None:
        raise InputError("data: give either labels or make.labels, not both")
    if labels is None and make_labels is None:
        raise InputError("data.labels: missing (a label folder, or make.labels to label the questions first)")
    if questions is None and make_questions is None:
        raise InputError("data.questions: missing (a questions.parquet, or make.questions to build them)")

    train = dict(_mapping(document.get("train") or {}, "train"))
    evaluate = dict(_mapping(document.get("evaluate") or {}, "evaluate"))
    for section, options in (("train", train), ("evaluate", evaluate)):
        for key in PATH_OPTIONS[section]:
            if options.get(key) is not None:
                options[key] = str(_path(options[key], base, f"{section}.{key}"))
    for section, options in (("train", train), ("evaluate", evaluate)):
        _refuse_reserved(options, SET_BY_SWEEP[section], section, "the sweep sets it for each run")
    raw_grids = document["grid"] if isinstance(document["grid"], list) else [document["grid"]]
    if not raw_grids:
        raise InputError("grid: an empty list of grids")
    grids = []
    for number, raw in enumerate(raw_grids):
        where = "grid" if len(raw_grids) == 1 else f"grid[{number}]"
        grid = _located(lambda: parse_grid(_mapping(raw, "grid")), where)
        if protocol == "study" and "seed" not in raw:
            grid["seed"] = list(STUDY_SEEDS)  # the study's three seeds per condition
        if grids and set(grid) != set(grids[0]):
            raise InputError(f"{where}: names {', '.join(grid)}; every grid of the list must name the same keys "
                             f"({', '.join(grids[0])})")
        if grids:
            grid = {key: grid[key] for key in grids[0]}  # one order of parameters for every run
        overlap = sorted(set(train) & set(grid))
        if overlap:
            raise InputError(f"train.{overlap[0]}: also a grid parameter; set it in one place")
        grids.append(grid)
    return SweepSpec(
        name=name,
        model=model.strip(),
        out=Path(out) if out is not None else Path("runs") / name,
        grid=grids[0] if len(grids) == 1 else grids,
        questions=questions,
        labels=labels,
        make_questions=make_questions,
        make_paraphrases=make_paraphrases,
        make_labels=make_labels,
        protocol=protocol,
        max_runs=max_runs,
        train=train,
        evaluate=evaluate,
        device=document.get("device"),
        dtype=document.get("dtype"),
        kernels=kernels,
        trust_remote_code=trust,
        source=source,
    )


def parse_grid(grid: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Each grid key -> its list of values (scalars become one-value lists, ranges are expanded), each value
    checked by its TrainConfig field."""
    parameters = grid_parameters()
    allowed = ("unknown", "mixtures", *[k for k in parameters if k != "unknown"])
    _refuse_unknown(grid, allowed, "grid.")
    if "unknown" not in grid:
        raise InputError("grid.unknown: missing (how many Unknown facts each run packs)")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    parsed: dict[str, list[Any]] = {}
    for key in allowed:
        if key not in grid:
            continue
        raw = grid[key]
        if key == "mixtures":
            values = parse_mixtures(raw)
        else:
            kind = parameters[key]
            if isinstance(raw, Mapping):
                if kind not in (int, float):
                    raise InputError(f"grid.{key}: takes a value or a list, not a range")
                raw = expand_range(raw, key)
            items = raw if isinstance(raw, list) and not (key == "targets" and _is_name_list(raw)) else [raw]
            values = [_grid_value(fields[key], kind, item) for item in items]
        if not values:
            raise InputError(f"grid.{key}: empty list")
        seen: set[str] = set()
        for value in values:  # a set: a long seed range must not take quadratic time
            text = str(value)
            if text in seen:
                raise InputError(f"grid.{key}: {text} is listed twice")
            seen.add(text)
        parsed[key] = values
    parsed.setdefault("mixtures", ["none"])
    return parsed


def _grid_value(field: dataclasses.Field, kind: Any, value: Any) -> Any:
    """One grid value converted and checked by its TrainConfig field (targets lists become module names)."""
    from knowpack.config import check_value

    if field.name == "targets" and isinstance(value, list):
        value = ",".join(str(v).strip() for v in value)
    try:
        return check_value(field, field_types(TrainConfig)[field.name], value)
    except ConfigError as err:
        raise err.renamed(f"grid.{field.name}") from None


def _is_name_list(values: list[Any]) -> bool:
    """``targets: [q_proj, v_proj]`` is one choice of module names; ``[mlp, attention]`` two presets."""
    return all(isinstance(v, str) and "," not in v and v not in TARGET_PRESETS for v in values)


def expand_range(spec: Mapping[str, Any], key: str) -> list[int | float]:
    """``{start, stop, step}`` (stop included) or ``{start, stop, num, log}`` (num points, log-spaced if log)."""
    _refuse_unknown(spec, RANGE_KEYS, f"grid.{key}.")
    if "start" not in spec or "stop" not in spec or ("step" in spec) == ("num" in spec):
        raise InputError(f"grid.{key}: a range needs start, stop and exactly one of step or num")
    start, stop = as_number(spec["start"]), as_number(spec["stop"])
    for name, value in (("start", start), ("stop", stop)):
        if value is None:
            raise InputError(f"grid.{key}.{name}: {spec[name]!r} is not a number")
    if stop < start:
        raise InputError(f"grid.{key}: stop {stop} is below start {start}")
    if "step" in spec:
        step = as_number(spec["step"])
        if step is None or step <= 0:
            raise InputError(f"grid.{key}.step: {step!r} must be a number greater than 0")
        if "log" in spec:
            raise InputError(f"grid.{key}.log: only with num (log-spaced points)")
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        if count > MAX_RUNS:
            raise InputError(f"grid.{key}: the range has {count:,} values, more than {MAX_RUNS:,}; check its step")
        values = [start + i * step for i in range(count)]
        all_ints = all(isinstance(v, int) for v in (start, stop, step))
        return [int(v) for v in values] if all_ints else [round(v, 12) for v in values]
    num = spec["num"]
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise InputError(f"grid.{key}.num: {num!r} must be a whole number of at least 1")
    if num > MAX_RUNS:
        raise InputError(f"grid.{key}.num: {num:,} values, more than {MAX_RUNS:,}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise InputError(f"grid.{key}.log: must be true or false")
    if log and start <= 0:
        raise InputError(f"grid.{key}.start: a log range needs start > 0")
    if num == 1:
        return [start]
    if log:
        ratio = (stop / start) ** (1 / (num - 1))
        values = [start * ratio**i for i in range(num)]
        return [float(f"{v:.6g}") for v in values]
    values = [start + (stop - start) * i / (num - 1) for i in range(num)]
    return [int(round(v)) for v in values] if all(isinstance(v, int) for v in (start, stop)) else [
        float(f"{v:.6g}") for v in values
    ]


# ---------------------------------------------------------------- mixtures

_EXTRA_ITEM = re.compile(r"^\s*([a-z][a-z\-]*)\s*:\s*(\d+)\s*$")


def parse_mixtures(raw: Any) -> list[str]:
    """Mixtures as canonical strings: ``none``, ``highly-known:10``, ``highly-known:1+paraphrase:1``.

    ``raw`` is a list whose items are ``none``, ``kind:k``, ``kind:k + kind:k`` or a list of ``kind:k``; or the
    range form ``{kinds: [...], ratios: [...], none: true}`` = every kind with every ratio (plus ``none``).
    """
    if isinstance(raw, Mapping):
        _refuse_unknown(raw, MIXTURE_RANGE_KEYS, "grid.mixtures.")
        kinds, ratios = raw.get("kinds"), raw.get("ratios")
        if not isinstance(kinds, list) or not isinstance(ratios, list) or not kinds or not ratios:
            raise InputError("grid.mixtures: the range form needs non-empty lists kinds and ratios")
        include_none = raw.get("none", True)
        if not isinstance(include_none, bool):
            raise InputError("grid.mixtures.none: must be true or false")
        items: list[Any] = (["none"] if include_none else []) + [f"{k}:{r}" for k in kinds for r in ratios]
    else:
        items = raw if isinstance(raw, list) else [raw]
    return [canonical_mixture(item) for item in items]


def canonical_mixture(item: Any) -> str:
    parts = item if isinstance(item, list) else str(item).split("+") if isinstance(item, str) else None
    if parts is None:
        raise InputError(f"grid.mixtures: {item!r} must be 'none', 'kind:k' or a list of 'kind:k'")
    if [p.strip() for p in parts if isinstance(p, str)] == ["none"] or parts == []:
        return "none"
    counts: dict[str, int] = {}
    for part in parts:
        match = _EXTRA_ITEM.match(part) if isinstance(part, str) else None
        if match is None:
            raise InputError(f"grid.mixtures: {part!r} must be 'kind:k', e.g. highly-known:10 or paraphrase:1")
        kind, ratio = match.group(1), int(match.group(2))
        if kind not in EXTRA_KINDS:
            raise InputError(f"grid.mixtures: unknown kind {kind!r} (kinds: {', '.join(EXTRA_KINDS)})")
        if kind in counts:
            raise InputError(f"grid.mixtures: {kind} appears twice in {item!r}")
        if ratio < 1:
            raise InputError(f"grid.mixtures: {part!r} needs a ratio of at least 1 (or use 'none')")
        counts[kind] = ratio
    return "+".join(f"{kind}:{counts[kind]}" for kind in sorted(counts))


def mixture_extra(mixture: str) -> list[str]:
    """A canonical mixture as the train stage's ``extra`` list."""
    return [] if mixture == "none" else mixture.split("+")


def mixture_label(mixture: str) -> str:
    """Human wording for legends: ``none`` -> 'no extra', ``highly-known:10`` -> '+10 HighlyKnown'; a report's
    condition key ``none@method=dora|rank=4`` -> 'no extra, dora rank 4'."""
    if "@" in mixture:
        mixture, settings = mixture.split("@", 1)
        values = dict(part.split("=", 1) for part in settings.split("|"))
        if values.get("method") == "full":
            return f"{mixture_label(mixture)}, full fine-tuning"
        words = " ".join(w for w in (values.get("method"), f"rank {values['rank']}" if "rank" in values else None) if w)
        return f"{mixture_label(mixture)}, {words}"
    if mixture == "none":
        return "no extra"
    names = {"highly-known": "HighlyKnown", "maybe-known": "MaybeKnown", "weakly-known": "WeaklyKnown"}
    words = []
    for part in mixture_extra(mixture):
        kind, ratio = part.split(":")
        noun = names.get(kind, kind)
        words.append(f"+{ratio} {noun}{'s' if kind == 'paraphrase' and int(ratio) > 1 else ''}")
    return " ".join(words)


# ---------------------------------------------------------------- expansion


def expand(config: SweepSpec) -> list[RunSpec]:
    """Each grid's cross product in a fixed order (grid keys as :func:`parse_grid` orders them, values as listed),
    grid after grid; a run already listed by an earlier grid is not listed again."""
    runs: dict[str, RunSpec] = {}
    for grid in config.grids:
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            params = {("mixture" if k == "mixtures" else k): v for k, v in zip(keys, values)}
            run = RunSpec(run_id=run_id(config, params), params=params, train=dict(config.train),
                          evaluate=dict(config.evaluate))
            runs.setdefault(run.run_id, run)
    return list(runs.values())


def run_id(config: SweepSpec, params: Mapping[str, Any]) -> str:
    """A readable prefix (facts, mixture, seed) and a hash of everything that shapes the run's result."""
    shaped_by = {"model": config.model, "params": dict(params), "train": config.train,
                 "evaluate": evaluate_key(config.evaluate)}
    if config.protocol is not None:  # only then: the ids of sweeps without a protocol stay what they were
        shaped_by["protocol"] = config.protocol
    digest = stable_hash(shaped_by, 10)
    mixture = params["mixture"].replace(":", "").replace("+", "_").replace("highly-known", "hk").replace(
        "maybe-known", "mk").replace("weakly-known", "wk").replace("paraphrase", "para")
    seed = f"-s{params['seed']}" if "seed" in params else ""
    return f"u{params['unknown']}-{mixture}{seed}-{digest}"


def evaluate_key(evaluate: Mapping[str, Any]) -> dict[str, Any]:
    """A sweep's evaluate options less those that stay out of an evaluation's own key (``damage_if_reliability``
    only decides whether a run's damage is measured yet; asked again it is added to the same runs)."""
    from knowpack.evaluate.stage import EvaluateConfig

    outside = EvaluateConfig.outside_results()
    return {name: value for name, value in evaluate.items() if name not in outside}


# ---------------------------------------------------------------- helpers


def _located(parse, where: str):
    """``parse()``, its errors naming ``where`` (``grid[1].rank``) instead of ``grid``."""
    try:
        return parse()
    except ConfigError as err:
        raise err.renamed(err.name.replace("grid", where, 1)) from None
    except InputError as err:
        raise InputError(str(err).replace("grid", where, 1)) from None


def _refuse_unknown(mapping: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise InputError(f"{prefix}{key}: unknown key (allowed here: {', '.join(allowed)})")


def _refuse_reserved(mapping: Mapping[str, Any], reserved: tuple[str, ...], section: str, why: str) -> None:
    for key in mapping:
        if key in reserved:
            raise InputError(f"{section}.{key}: cannot be set in a sweep ({why})")


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InputError(f"{key}: must be a mapping of keys")
    return value


def _path(value: Any, base: Path, key: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{key}: must be a path")
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()
