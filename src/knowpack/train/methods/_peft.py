"""What the PEFT methods (lora, dora, pissa) share: a LoRA adapter injected into the loaded model, saved per epoch
as a PEFT adapter folder (``adapter_model.safetensors`` + ``adapter_config.json``) that ``PeftModel`` loads.
Each member only says how its adapter differs from plain LoRA (``variant``), through PEFT's own options."""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from knowpack.errors import InputError
from knowpack.train.methods import Method, peft_targets

ADAPTER = "knowpack"


class PeftMethod(Method):
    @property
    def files(self) -> tuple[str, ...]:
        from knowpack.train.folder import ADAPTER_CONFIG_FILE, ADAPTER_FILE

        return (ADAPTER_FILE, ADAPTER_CONFIG_FILE)

    def variant(self) -> dict[str, Any]:
        """The ``LoraConfig`` options that make this method (none for plain LoRA)."""
        return {}

    def lora_config(self, config):
        from peft import LoraConfig

        return LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            use_rslora=config.rslora,
            target_modules=peft_targets(config.targets),
            bias="none",
            task_type="CAUSAL_LM",
            **self.variant(),
        )

    @contextmanager
    def attached(self, model, config):
        """Inject a newly initialised adapter (init seeded by ``config.seed``); remove it and restore the model's
        flags on exit."""
        import torch
        from peft import get_peft_model

        if getattr(model, "peft_config", None):
            raise InputError("the loaded model already carries a LoRA adapter; train on the plain base model")
        requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
        was_training = model.training
        torch.manual_seed(config.seed)
        try:
            with warnings.catch_warnings():  # peft calls a transformers method that transformers 5 marks deprecated
                warnings.simplefilter("ignore", FutureWarning)
                peft_model = get_peft_model(model, self.lora_config(config), adapter_name=ADAPTER)
        except ValueError as err:
            raise InputError(f"--targets: {str(err).splitlines()[0][:300]}") from err
        try:
            yield peft_model
        finally:
            peft_model.unload()
            for name, p in model.named_parameters():
                p.requires_grad_(requires_grad[name])
            model.train(was_training)

    def adapter_weights(self, trainee) -> dict:
        """The adapter's tensors as they are saved (PEFT's state-dict names)."""
        from peft.utils import get_peft_model_state_dict

        return get_peft_model_state_dict(trainee, adapter_name=ADAPTER, save_embedding_layers=False)

    def save(self, trainee, folder: Path) -> None:
        write_adapter(folder, self.adapter_weights(trainee), trainee.peft_config[ADAPTER])

    def load(self, trainee, folder: Path, device) -> None:
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        from knowpack.train.folder import ADAPTER_FILE

        set_peft_model_state_dict(trainee, self.trained_form(load_file(folder / ADAPTER_FILE, device=str(device))),
                                  adapter_name=ADAPTER)

    def trained_form(self, saved: dict) -> dict:
        """The saved tensors as the adapter holds them while training (the same for all but pissa)."""
        return saved


def write_adapter(folder: Path, adapter: dict, adapter_config) -> None:
    """A PEFT adapter folder: the tensors (PEFT's state-dict names) and the config as inference config, its
    target modules sorted (a set's order changes with the process's hash seed: same run, same bytes). The grouped
    loop writes its runs' epochs through this too."""
    from safetensors.torch import save_file

    from knowpack.train.folder import ADAPTER_FILE

    save_file({k: v.detach().to("cpu").contiguous() for k, v in adapter.items()}, folder / ADAPTER_FILE)
    saved = copy.deepcopy(adapter_config)
    saved.inference_mode = True
    if isinstance(saved.target_modules, (set, frozenset)):
        saved.target_modules = sorted(saved.target_modules)
    saved.save_pretrained(str(folder))
