"""Protocols: named sets of stage settings. ``study`` is what Pletenev et al. (2025) did (docs/study-fidelity.md).

A protocol is applied to the options a user gave, never over them: ``knowpack train --protocol study --rank 8``
trains with every study setting but rank 8 (and, as the protocol ties them, alpha 16). The CLI (``--protocol``),
sweep files (``protocol: study``) and the Python API (``apply``) use the same presets. What a run used is told by
its settings, so the report describes each run against the protocols (``describe``), and a run is "the study's"
only when it is.
"""

from __future__ import annotations

from typing import Any

# Seeds of the study's three runs per condition (its code's defaults).
STUDY_SEEDS = (42, 1337, 10824)

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "study": {
        # 10 four-shot prompts from a fixed exemplar pool, greedy only (the study's code never samples, so there is
        # no WeaklyKnown), answers of up to 32 new tokens
        "label": {"n_prompts": 10, "shots": 4, "exemplars": "pool", "n_samples": 0, "max_new_tokens": 32},
        # rank-1 LoRA on the MLP with alpha = 2 (rsLoRA; alpha = 2·rank when the rank is changed), dropout 0.1,
        # lr 1e-3 linearly decayed, 10 epochs, batch 8, loss on every token (its code), seed 42
        "train": {"rank": 1, "alpha": 2.0, "rslora": True, "dropout": 0.1, "targets": "mlp", "lr": 1e-3,
                  "epochs": 10, "batch_size": 8, "loss_on": "all", "schedule": "linear", "weight_decay": 0.0,
                  "max_grad_norm": 1.0, "seed": STUDY_SEEDS[0]},
        # MMLU 5-shot on every subject; the shift at the last epoch
        "evaluate": {"benchmarks": ("mmlu",), "mmlu_subjects": (), "limit": None, "shift_epochs": "last"},
    },
}
PROTOCOLS = tuple(PRESETS)


def apply(stage: str, name: str, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` with the protocol's settings for ``stage`` filled in where the user set nothing."""
    from knowpack.errors import InputError

    if name not in PRESETS:
        raise InputError(f"--protocol {name!r}: not a known protocol (known: {', '.join(PROTOCOLS)})")
    preset = dict(PRESETS[name].get(stage, {}))
    if stage == "train" and "alpha" not in given and "rank" in given:
        preset["alpha"] = 2.0 * given["rank"]  # the study's alpha/rank = 2
    return {**preset, **given}


def describe(stage: str, settings: dict[str, Any]) -> str:
    """How a run's result-affecting settings relate to the protocols: 'study', 'study except rank=8, …', or the
    differences from the closest protocol when most differ."""
    best = None
    for name, preset in PRESETS.items():
        wanted = preset.get(stage, {})
        differing = [f"{key}={settings[key]}" for key, value in wanted.items()
                     if key in settings and _normal(settings[key]) != _normal(value)
                     and not (stage == "train" and key == "seed")]
        if best is None or len(differing) < len(best[1]):
            best = (name, differing)
    if best is None:
        return "custom"
    name, differing = best
    if not differing:
        return name
    if len(differing) > len(PRESETS[name].get(stage, {})) // 2:
        return "knowpack settings"
    return f"{name} except {', '.join(differing)}"


def _normal(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value
