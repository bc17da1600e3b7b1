"""The train stage's work — packing runs: fresh trainable weights on a shared base model (a LoRA adapter by default,
``methods/`` for the others), trained epoch by epoch with crash-safe resume.

Why it is built this way:
- *Many runs, one base model.* The study reloaded the 8B model for each of its 72 runs. Here a run attaches new
  weights to the loaded model (``Method.attached``: a fresh adapter, removed afterwards) and restores everything it
  touched, so a sweep loads the base once and run B never depends on whether run A ran before it.
- *No padding waste.* Rows are 40–70 tokens. A batch's rows are packed into lanes of about ``lane_tokens``
  tokens with position ids restarting at each row and attention per lane with a block-diagonal causal mask
  (``packing.py``), so rows never see each other, almost no pad token is computed and attention cost stays
  linear in the step's tokens. Logits are computed only where the loss needs them (the answer tokens by
  default), which skips most of the large vocabulary projection.
- *Resume that ends bit-identical.* The data order of an epoch is a function of (seed, epoch) and the global RNG
  (LoRA dropout) is reseeded at each epoch start, so an epoch's result depends only on the adapter and optimizer
  state at its start — which every epoch folder stores (the method's weights + AdamW state, written to a temp
  folder and renamed into place only when complete).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from knowpack.errors import InputError
from knowpack.kg.folder import questions_file
from knowpack.models import LoadedModel
from knowpack.runfolder import RunFolder, open_run, os_error, read_parquet, write_parquet
from knowpack.train.folder import (EPOCHS_DIR, OPTIMIZER_FILE, TRAIN_LOG_FILE, TRAIN_LOG_SCHEMA, TRAIN_SET_FILE,
                                   TRAIN_SET_SCHEMA, TrainRun, epoch_name)
from knowpack.train.methods import METHODS, Method
from knowpack.train.mixture import Fact, draw_facts, questions_of
from knowpack.train.packing import pack, packed_logits, uses_varlen
from knowpack.train.stage import TrainConfig

log = logging.getLogger(__name__)

PROGRESS_EVERY = 10  # steps between the progress bar's loss readings (each waits for the GPU)


def train_loaded(loaded: LoadedModel, config: TrainConfig) -> TrainRun:
    """Train one adapter on ``loaded`` (left unchanged afterwards) into the run folder ``config.out``."""
    prepared = prepare_run(loaded, config)
    if isinstance(prepared, TrainRun):
        return prepared
    method = METHODS[config.method]
    with method.attached(loaded.model, config) as trainee:
        # written once the adapter exists: a run refused there (bad --targets) leaves no work behind, so a
        # corrected command may reuse the folder
        prepared.write_train_set(trainee)
        epoch_loss = _fit(prepared.run, method, trainee, loaded.model, prepared.rows, config)
    return prepared.finish(epoch_loss)


@dataclass
class PreparedRun:
    """A training run folder opened, its facts drawn and encoded; nothing written in it yet but the manifest."""

    run: RunFolder
    config: TrainConfig
    facts: list[Fact]
    texts: list[tuple[str, str]]
    rows: list[tuple[list[int], int]]

    def write_train_set(self, trainee: torch.nn.Module) -> None:
        """The rows trained on, and the run's size (``trainable_parameters`` of ``trainee``, which ``capacity``
        sets against its ceiling)."""
        write_parquet(
            self.run.file(TRAIN_SET_FILE),
            pa.table(
                {
                    "row_id": list(range(len(self.facts))),
                    "kind": [f.kind for f in self.facts],
                    "question_id": [f.question_id for f in self.facts],
                    "prompt": [p for p, _ in self.texts],
                    "target": [t for _, t in self.texts],
                },
                schema=TRAIN_SET_SCHEMA,
            ),
        )
        self.run.note(
            unknown_ids=[f.question_id for f in self.facts if f.kind == "unknown"],
            rows=len(self.rows),
            row_tokens=int(sum(len(ids) for ids, _ in self.rows)),
            trainable_parameters=sum(p.numel() for p in trainee.parameters() if p.requires_grad),
        )

    def finish(self, epoch_loss: list[float]) -> TrainRun:
        epochs, files = self.config.epochs, METHODS[self.config.method].epoch_files
        outputs = [TRAIN_SET_FILE, TRAIN_LOG_FILE] + [
            f"{EPOCHS_DIR}/{epoch_name(e)}/{name}" for e in range(1, epochs + 1) for name in files
        ]
        self.run.finish(outputs, epochs_done=epochs, epoch_loss=epoch_loss)
        return TrainRun(self.run.path)


def prepare_run(loaded: LoadedModel, config: TrainConfig) -> PreparedRun | TrainRun:
    """Open the run folder (the finished run if it is complete) and draw and encode the run's rows."""
    questions = questions_of(config.labels, config.questions)
    inputs = {"labels": config.labels, "questions": questions}
    if config.extra_pool is not None:
        inputs["extra_pool"] = config.extra_pool
    if config.pack_from is not None:
        inputs["pack_from"] = questions_file(config.pack_from)
    if config.pool is not None:
        inputs["pool"] = questions_file(config.pool)
    run = open_run(
        config.out,
        "train",
        config,
        inputs,
        extra_key={"model": loaded.fingerprint, **loaded.numerics()},
        overwrite=config.overwrite,
    )
    if run.complete:
        return TrainRun(run.path)
    facts = draw_facts(config)
    # A custom template is plain text; otherwise the model's chat template unless the config says otherwise.
    chat = (loaded.chat if config.chat is None else config.chat) and config.template is None
    texts = [format_example(loaded.tokenizer, fact, chat, config.template) for fact in facts]
    rows = [encode_example(loaded.tokenizer, prompt, target, add_special_tokens=not chat) for prompt, target in texts]
    return PreparedRun(run, config, facts, texts, rows)


# ---------------------------------------------------------------- examples


def format_example(tokenizer, fact: Fact, chat: bool, template: str | None) -> tuple[str, str]:
    """(prompt, target) texts: the study's zero-shot prompt, or ``template`` split at ``{answer}``."""
    if template is None:
        from knowpack.probe.prompts import training_example

        return training_example(tokenizer, fact.question, fact.answer, chat)
    before, after = template.split("{answer}", 1)
    return before.replace("{question}", fact.question), fact.answer + after.replace("{question}", fact.question)


def encode_example(tokenizer, prompt: str, target: str, *, add_special_tokens: bool) -> tuple[list[int], int]:
    """Token ids of prompt + target (tokenised apart, as at inference) ending in EOS, and the prompt length."""
    prompt_ids = tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in target_ids:
        target_ids = target_ids + [tokenizer.eos_token_id]
    return prompt_ids + target_ids, len(prompt_ids)


def split_rows(rows: list[tuple[list[int], int]], max_tokens: int | None) -> list[list[tuple[list[int], int]]]:
    """Consecutive groups of rows of at most ``max_tokens`` tokens (a longer row alone): forward passes that bound
    a step's activation memory."""
    if max_tokens is None:
        return [rows]
    groups, current, length = [], [], 0
    for row in rows:
        if current and length + len(row[0]) > max_tokens:
            groups.append(current)
            current, length = [], 0
        current.append(row)
        length += len(row[0])
    return groups + [current]


def epoch_batches(n_rows: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Row indices per step: a permutation that depends only on (seed, epoch), cut into batches."""
    order = np.random.default_rng([seed, epoch]).permutation(n_rows)
    return [order[i : i + batch_size] for i in range(0, n_rows, batch_size)]


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


# ---------------------------------------------------------------- the loop


def _fit(
    run: RunFolder, method: Method, trainee: torch.nn.Module, model: torch.nn.Module, rows: list, config: TrainConfig
) -> list[float]:
    """Train the remaining epochs (resuming after the last complete one); return each epoch's loss."""
    from tqdm.auto import tqdm

    loop = TrainingLoop(trainee, model, rows, config)
    epochs_dir = run.file(EPOCHS_DIR)
    done = last_complete_epoch(epochs_dir, config.epochs, method.epoch_files)
    log_rows: list[dict] = []
    if done:
        folder = epochs_dir / epoch_name(done)
        method.load(trainee, folder, loop.device)
        load_optimizer(folder, loop.optimizer, loop.params)
        previous = read_parquet(run.file(TRAIN_LOG_FILE), TRAIN_LOG_SCHEMA).to_pylist()
        log_rows = [row for row in previous if row["epoch"] <= done]
        log.info("%s: resuming after epoch %d", run.path, done)
    with tqdm(total=loop.steps_per_epoch * (config.epochs - done), desc=f"train {run.path.name}", unit="step",
              disable=not config.progress, dynamic_ncols=True) as bar:
        for epoch in range(done + 1, config.epochs + 1):
            log_rows += loop.run_epoch(epoch, bar)
            # The log first, then the epoch folder: a crash in between leaves log rows that resume drops.
            write_parquet(run.file(TRAIN_LOG_FILE), pa.Table.from_pylist(log_rows, schema=TRAIN_LOG_SCHEMA))
            save_epoch(epochs_dir, epoch, lambda folder: method.save(trainee, folder), method.epoch_files,
                       loop.optimizer, loop.params)
            losses = epoch_losses(log_rows)
            run.note(epochs_done=epoch, epoch_loss=losses)
            log.info("%s: epoch %d loss %.4f", run.path, epoch, losses[-1])
    return epoch_losses(log_rows)


class TrainingLoop:
    """AdamW over the adapter's parameters and one epoch at a time; an epoch depends only on (seed, epoch) and
    the adapter and optimizer state at its start. The throughput bench drives this same code."""

    def __init__(self, trainee: torch.nn.Module, model: torch.nn.Module, rows: list, config: TrainConfig):
        self.model, self.rows, self.config = model, rows, config
        self.device = next(model.parameters()).device
        self.params = [(name, p) for name, p in trainee.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            [p for _, p in self.params], lr=config.lr, weight_decay=config.weight_decay, fused=self.device.type == "cuda"
        )
        self.steps_per_epoch = -(-len(rows) // config.batch_size)
        self.varlen = uses_varlen(model)
        # bf16 base weights with float32 adapter weights: run the adapter's matmuls in bf16 too, and keep peft from
        # copying every adapter input to float32 first (autocast casts for the matmul anyway).
        self.bf16_autocast = self.device.type == "cuda" and next(model.parameters()).dtype == torch.bfloat16
        if self.bf16_autocast:
            for module in trainee.modules():
                if isinstance(module, BaseTunerLayer):
                    module.cast_input_dtype_enabled = False

    def run_epoch(self, epoch: int, bar=None) -> list[dict]:
        """Train one epoch; one log row (epoch, step, loss, tokens, seconds) per optimizer step.

        On a GPU nothing waits for the device inside the epoch but the progress bar's loss, read every
        ``PROGRESS_EVERY`` steps (losses stay on the device, step times are CUDA events), so Python queues the next
        step while the GPU still runs this one. A loss or adapter weight that is no longer finite stops training
        with a one-line error before the epoch is saved: at once on a CPU, at the end of the epoch on a GPU."""
        config, total_steps = self.config, self.steps_per_epoch * self.config.epochs
        torch.manual_seed(epoch_seed(config.seed, epoch))
        self.model.train()
        losses, tokens, clocks = [], [], [step_clock(self.device)]
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        started = time.perf_counter()
        for index, batch_rows in enumerate(epoch_batches(len(self.rows), config.batch_size, config.seed, epoch)):
            step = (epoch - 1) * self.steps_per_epoch + index
            for group in self.optimizer.param_groups:
                group["lr"] = config.lr * (1 - step / total_steps if config.schedule == "linear" else 1.0)
            rows = [self.rows[i] for i in batch_rows]
            passes = [pack(group, config.loss_on, self.device, config.lane_tokens, self.varlen)
                      for group in split_rows(rows, config.max_tokens_per_pass)]
            targets = sum(len(batch.labels) for batch in passes)
            step_loss = torch.zeros((), device=self.device)
            for batch in passes:  # gradient accumulation: sum of per-token losses over the step's target count
                with torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16_autocast else nullcontext():
                    logits = packed_logits(self.model, batch)
                loss = torch.nn.functional.cross_entropy(logits.float(), batch.labels, reduction="sum") / targets
                loss.backward()
                step_loss += loss.detach()
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_([p for _, p in self.params], config.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            finite &= torch.isfinite(step_loss)
            if self.device.type == "cpu" and not finite:
                self._diverged(epoch, index + 1)
            losses.append(step_loss)
            tokens.append(sum(batch.tokens for batch in passes))
            clocks.append(step_clock(self.device))
            if bar is not None and not bar.disable:
                bar.update(1)
                if index % PROGRESS_EVERY == 0 or index + 1 == self.steps_per_epoch:
                    rate = sum(tokens) / max(time.perf_counter() - started, 1e-9)
                    bar.set_postfix(epoch=epoch, loss=f"{step_loss.item():.4f}", tokens_s=f"{rate:,.0f}")
        if not finite or not all(torch.isfinite(p).all() for _, p in self.params):
            self._diverged(epoch, None)
        seconds = clock_intervals(self.device, clocks)
        return [
            {"epoch": epoch, "step": (epoch - 1) * self.steps_per_epoch + i + 1, "loss": loss, "tokens": n,
             "seconds": sec}
            for i, (loss, n, sec) in enumerate(zip(torch.stack(losses).tolist(), tokens, seconds, strict=True))
        ]

    def _diverged(self, epoch: int, step: int | None) -> None:
        where = f"epoch {epoch}" + (f", step {step}" if step else "")
        raise InputError(f"training diverged at {where}: the loss or the adapter's weights are no longer finite "
                         f"(inf/nan); nothing of this epoch was saved; lower --lr (now {self.config.lr:g}) or "
                         f"--alpha (now {self.config.alpha:g})")



def step_clock(device: torch.device):
    """A point in time that does not wait for the GPU: a recorded CUDA event there, the wall clock on a CPU."""
    if device.type != "cuda":
        return time.perf_counter()
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def clock_intervals(device: torch.device, clocks: list) -> list[float]:
    """Seconds between consecutive ``step_clock`` readings (waits for the GPU once, at the last)."""
    if device.type != "cuda":
        return [b - a for a, b in zip(clocks, clocks[1:])]
    clocks[-1].synchronize()
    return [a.elapsed_time(b) / 1000 for a, b in zip(clocks, clocks[1:])]


def epoch_losses(log_rows: list[dict]) -> list[float]:
    """Mean step loss per epoch, in epoch order."""
    epochs = sorted({row["epoch"] for row in log_rows})
    return [float(np.mean([r["loss"] for r in log_rows if r["epoch"] == e])) for e in epochs]


def last_complete_epoch(epochs_dir: Path, epochs: int, epoch_files: tuple[str, ...]) -> int:
    """Highest N with epochs 1..N all complete; leftover temp folders of an interrupted save are removed."""
    if epochs_dir.is_dir():
        for leftover in epochs_dir.glob(".epoch_*"):
            shutil.rmtree(leftover, ignore_errors=True)
    done = 0
    while done < epochs and all((epochs_dir / epoch_name(done + 1) / name).is_file() for name in epoch_files):
        done += 1
    return done


def save_epoch(epochs_dir: Path, epoch: int, write_weights: Callable[[Path], None], epoch_files: tuple[str, ...],
               optimizer: torch.optim.Optimizer, params: list[tuple[str, torch.Tensor]]) -> None:
    """Write the trained weights (``write_weights(folder)``: the method's files), the optimizer state (by
    parameter name) to a temp folder, fsync ``epoch_files``, and rename it into place."""
    final = epochs_dir / epoch_name(epoch)
    staging = epochs_dir / f".{epoch_name(epoch)}.tmp-{os.getpid()}"
    kept = f"the epochs before {epoch} are kept; run the same command to resume"
    try:
        _write_epoch(staging, final, write_weights, epoch_files, optimizer, params)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise os_error(err, final, kept) from err
    except SafetensorError as err:  # safetensors reports its OS errors as its own ("IoError(Os { code: 28 … })")
        shutil.rmtree(staging, ignore_errors=True)
        code = re.search(r"code: (\d+)", str(err))
        raise os_error(OSError(int(code.group(1)) if code else None, str(err)), final, kept) from err


def _write_epoch(staging: Path, final: Path, write_weights: Callable[[Path], None], epoch_files: tuple[str, ...],
                 optimizer, params) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write_weights(staging)
    state = optimizer.state_dict()["state"]
    tensors = {
        f"{name}.{key}": torch.as_tensor(value).detach().to("cpu").contiguous()
        for index, (name, _) in enumerate(params)
        for key, value in state.get(index, {}).items()
    }
    save_file(tensors, staging / OPTIMIZER_FILE)
    for name in epoch_files:
        with open(staging / name, "rb") as handle:
            os.fsync(handle.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)


def load_optimizer(folder: Path, optimizer: torch.optim.Optimizer, params: list[tuple[str, torch.Tensor]]) -> None:
    """Restore the AdamW state saved by :func:`save_epoch` (by parameter name)."""
    saved = load_file(folder / OPTIMIZER_FILE)
    state_dict = optimizer.state_dict()
    state_dict["state"] = {
        index: {key: saved[f"{name}.{key}"] for key in ("step", "exp_avg", "exp_avg_sq")}
        for index, (name, _) in enumerate(params)
    }
    optimizer.load_state_dict(state_dict)
