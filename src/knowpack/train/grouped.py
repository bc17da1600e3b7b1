"""Several packing runs trained together: every step, one pass over the base model carries each run's own batch.

Why: at the study's batch of 8 rows (about 450 tokens) a step leaves a GPU mostly idle — knowpack's solo loop is
1.0–1.5× the HF Trainer there (bench/RESULTS.md) — and a larger batch would change a run's dynamics (fewer
optimizer steps). Trained together, G runs of a sweep keep their own dynamics — each its own 8-row batches in its
own order, its own AdamW, learning-rate schedule and gradient clipping — while the GPU sees G × 8 rows a step.

How: each run's adapter is created by peft exactly as its solo run's (``fresh_adapter``, same seed: the same
initial weights), copied out as plain tensors, and peft is removed. In a step, each target Linear adds, for each
run, ``dropout(x[span]) @ Aᵀ @ Bᵀ · scaling`` on that run's span of the packed tokens (``pack(groups=...)`` keeps
a run's rows contiguous). The step's loss is the sum of the runs' mean token losses; a run's tokens pass through
its own adapter only, so each adapter's gradient is exactly its own run's. Epochs are saved in the solo layout
(peft's key names, the same adapter config and optimizer file), so evaluation, reports and peft cannot tell the
two apart.

What differs from a solo run: floating-point rounding (other matmul shapes; the test compares with allclose), and
the LoRA dropout masks. Those come from the run's own generator, seeded by (seed, epoch) and drawn over the run's
own real tokens: the same distribution as peft's masks, other draws, and the same draws whatever the run is
grouped with, so a resumed sweep that groups runs differently reproduces them. Only plain LoRA runs whose steps
are one pass are grouped (``groupable``); the others train alone.

``seconds`` in a grouped run's training log is its share of each step's wall time (by its tokens), so the
seconds of a group's runs add up to the group's time.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import pyarrow as pa
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file

from knowpack.errors import InputError
from knowpack.models import LoadedModel
from knowpack.runfolder import read_parquet, write_parquet
from knowpack.train.folder import ADAPTER_FILE, EPOCHS_DIR, TRAIN_LOG_FILE, TRAIN_LOG_SCHEMA, TrainRun, epoch_name
from knowpack.train.loop import (ADAPTER, PROGRESS_EVERY, PreparedRun, epoch_losses, last_complete_epoch,
                                 clock_intervals, epoch_batches, epoch_seed, fresh_adapter, load_optimizer,
                                 lora_config, prepare_run, save_epoch, step_clock)
from knowpack.train.packing import PackedBatch, pack, packed_logits, uses_varlen
from knowpack.train.stage import TrainConfig

GROUP_ROWS = 128  # rows per step a group aims for on a GPU (batch 8 × 16 runs): the packed-loop plateau


def groupable(config: TrainConfig) -> bool:
    """Plain LoRA whose steps are one forward pass each."""
    return getattr(config, "method", "lora") == "lora" and config.max_tokens_per_pass is None


def group_key(config: TrainConfig) -> tuple:
    """Runs with the same key can share a pass: the same adapted modules and the same packing."""
    return (config.targets, config.loss_on, config.lane_tokens)


def auto_group_size(loaded: LoadedModel, batch_size: int) -> int:
    """Runs per group by default: enough for ``GROUP_ROWS`` rows a step on a GPU that packs by flash attention
    over rows; 1 elsewhere (a CPU is busy with one run's batch already)."""
    if not uses_varlen(loaded.model):
        return 1
    return max(1, GROUP_ROWS // batch_size)


@dataclass(eq=False)
class Member:
    """One run of a group: its rows, its adapter as plain tensors, its optimizer and its progress."""

    config: TrainConfig
    rows: list[tuple[list[int], int]]
    adapter_config: object  # the run's peft LoraConfig, saved with each epoch
    params: list[tuple[str, torch.Tensor]]  # peft's parameter names (the optimizer file's keys) → leaf tensors
    weights: dict[str, tuple[torch.Tensor, torch.Tensor, float]]  # module path → (A, B, scaling)
    optimizer: torch.optim.Optimizer
    prepared: PreparedRun | None = None  # its run folder (None: a benchmark's run)
    done: int = 0
    log_rows: list[dict] = field(default_factory=list)
    generator: torch.Generator | None = None
    error: Exception | None = None

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.rows) // self.config.batch_size)

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The adapter in peft's saved layout (parameter names without the adapter's name)."""
        return {name.replace(f".{ADAPTER}", ""): tensor for name, tensor in self.params}



def train_group(loaded: LoadedModel, configs: Sequence[TrainConfig]) -> list[TrainRun | Exception]:
    """Train ``configs`` together on ``loaded`` (left unchanged); per run its finished folder or the error that
    stopped it (one run failing leaves the others training)."""
    results: list[TrainRun | Exception | None] = [None] * len(configs)
    members: list[tuple[int, Member]] = []
    for index, config in enumerate(configs):
        try:
            if not groupable(config):
                raise InputError(f"{config.out}: this run cannot be trained in a group (see train.grouped.groupable)")
            prepared = prepare_run(loaded, config)
            if isinstance(prepared, TrainRun):
                results[index] = prepared
            else:
                members.append((index, _member(loaded, prepared)))
        except Exception as err:  # noqa: BLE001 - reported for this run; the group goes on
            results[index] = err
    if members:
        if len({group_key(m.config) for _, m in members}) > 1:
            raise ValueError("train_group: runs of one group must share targets, loss_on and lane_tokens")
        GroupedLoop(loaded.model, [m for _, m in members]).fit()
        for index, member in members:
            results[index] = member.error or member.prepared.finish(epoch_losses(member.log_rows))
    return results


def _member(loaded: LoadedModel, prepared: PreparedRun) -> Member:
    """The run's member, resumed after its last saved epoch."""
    member = new_member(loaded.model, prepared.config, prepared.rows, on_created=prepared.write_train_set)
    member.prepared = prepared
    epochs_dir = prepared.run.file(EPOCHS_DIR)
    member.done = last_complete_epoch(epochs_dir, prepared.config.epochs)
    if member.done:
        folder = epochs_dir / epoch_name(member.done)
        saved = load_file(folder / ADAPTER_FILE)
        with torch.no_grad():
            for name, tensor in member.params:
                tensor.copy_(saved[name.replace(f".{ADAPTER}", "")])
        load_optimizer(folder, member.optimizer, member.params)
        previous = read_parquet(prepared.run.file(TRAIN_LOG_FILE), TRAIN_LOG_SCHEMA).to_pylist()
        member.log_rows = [row for row in previous if row["epoch"] <= member.done]
    return member


def new_member(model: torch.nn.Module, config: TrainConfig, rows: list, on_created=None) -> Member:
    """A run's adapter as peft initialises it for a solo run (same seed, same weights), copied out of the model;
    ``on_created`` runs while peft's adapter exists (a run's train set is written only once its targets are
    known to be valid)."""
    with fresh_adapter(model, lora_config(config), config.seed) as peft_model:
        if on_created is not None:
            on_created()
        adapter_config = copy.deepcopy(peft_model.peft_config[ADAPTER])
        tensor_of = {id(p): name for name, p in peft_model.named_parameters()}
        params, weights = [], {}
        for module_name, module in peft_model.named_modules():
            if isinstance(module, BaseTunerLayer) and ADAPTER in getattr(module, "lora_A", {}):
                a, b = module.lora_A[ADAPTER].weight, module.lora_B[ADAPTER].weight
                copies = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
                params += [(tensor_of[id(a)], copies[0]), (tensor_of[id(b)], copies[1])]
                weights[module_name.removeprefix("base_model.model.")] = (*copies, module.scaling[ADAPTER])
        trained = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    if sorted(trained) != sorted(name for name, _ in params):
        raise InputError(f"{config.out}: the adapter trains more than LoRA A/B weights; train this run alone")
    order = {name: i for i, name in enumerate(trained)}  # the solo loop's parameter order
    params.sort(key=lambda item: order[item[0]])
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW([p for _, p in params], lr=config.lr, weight_decay=config.weight_decay,
                                  fused=device.type == "cuda")
    return Member(config, rows, adapter_config, params, weights, optimizer)


_STEP: list[_Routing] = []  # the pass in progress


class GroupedLoop:
    """Epochs of a group: each step packs every active run's batch into one pass (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, members: list[Member]):
        self.model, self.members = model, members
        self.device = next(model.parameters()).device
        self.varlen = uses_varlen(model)
        self.bf16_autocast = self.device.type == "cuda" and next(model.parameters()).dtype == torch.bfloat16
        self.config = members[0].config  # targets, loss_on and lane_tokens are shared (group_key)

    def fit(self) -> None:
        """Train every member's remaining epochs, saving each run's epochs as they end."""
        from tqdm.auto import tqdm

        last = max(m.config.epochs for m in self.members)
        first = min(m.done for m in self.members) + 1
        steps = sum(max((m.steps_per_epoch for m in self._in_epoch(e)), default=0) for e in range(first, last + 1))
        with tqdm(total=steps, desc=f"train {len(self.members)} runs together", unit="step",
                  disable=not any(m.config.progress for m in self.members), dynamic_ncols=True) as bar, \
                self.attached():
            for epoch in range(first, last + 1):
                members = self._in_epoch(epoch)
                for member, log_rows in self.run_epoch(epoch, members, bar).items():
                    self._save(member, epoch, log_rows)

    def _in_epoch(self, epoch: int) -> list[Member]:
        return [m for m in self.members if m.error is None and m.done < epoch <= m.config.epochs]

    def run_epoch(self, epoch: int, members: list[Member], bar=None) -> dict[Member, list[dict]]:
        """One epoch of ``members``; each run's log rows, as the solo loop's. A run whose loss or weights are no
        longer finite gets ``error`` set and no rows (nothing of the epoch is saved for it)."""
        if not members:
            return {}
        batches = {id(m): epoch_batches(len(m.rows), m.config.batch_size, m.config.seed, epoch)
                   for m in members}
        for member in members:
            member.generator = torch.Generator(self.device).manual_seed(epoch_seed(member.config.seed, epoch))
        self.model.train()
        per_run: dict[int, list] = {id(m): [] for m in members}  # (loss, tokens, step index) per step
        clocks, shares = [step_clock(self.device)], []
        finite = {id(m): torch.ones((), dtype=torch.bool, device=self.device) for m in members}
        started, tokens_done = time.perf_counter(), 0
        for index in range(max(m.steps_per_epoch for m in members)):
            active = [m for m in members if index < m.steps_per_epoch]
            groups = [[m.rows[i] for i in batches[id(m)][index]] for m in active]
            batch = pack([row for rows in groups for row in rows], self.config.loss_on, self.device,
                         self.config.lane_tokens, self.varlen, groups=[len(rows) for rows in groups])
            losses = self._step(epoch, index, active, batch)
            counts = [sum(len(ids) for ids, _ in rows) for rows in groups]
            for member, loss, count in zip(active, losses, counts, strict=True):
                finite[id(member)] &= torch.isfinite(loss)
                per_run[id(member)].append((loss, count, index))
            shares.append({id(m): count / batch.tokens for m, count in zip(active, counts)})
            clocks.append(step_clock(self.device))
            tokens_done += batch.tokens
            if bar is not None and not bar.disable:
                bar.update(1)
                if index % PROGRESS_EVERY == 0:
                    rate = tokens_done / max(time.perf_counter() - started, 1e-9)
                    bar.set_postfix(epoch=epoch, runs=len(active), loss=f"{torch.stack(losses).mean().item():.4f}",
                                    tokens_s=f"{rate:,.0f}")
        seconds = clock_intervals(self.device, clocks)
        logs = {}
        for member in members:
            if not finite[id(member)] or not all(torch.isfinite(p).all() for _, p in member.params):
                member.error = InputError(
                    f"{member.config.out}: training diverged at epoch {epoch}: the loss or the adapter's weights are no longer "
                    f"finite (inf/nan); nothing of this epoch was saved; lower --lr (now {member.config.lr:g}) or "
                    f"--alpha (now {member.config.alpha:g})")
                continue
            steps = per_run[id(member)]
            values = torch.stack([loss for loss, _, _ in steps]).tolist()
            first_step = (epoch - 1) * member.steps_per_epoch
            logs[member] = [
                {"epoch": epoch, "step": first_step + i + 1, "loss": value, "tokens": count,
                 "seconds": seconds[index] * shares[index][id(member)]}
                for i, (value, (_, count, index)) in enumerate(zip(values, steps, strict=True))
            ]
        return logs

    def _step(self, epoch: int, index: int, active: list[Member], batch: PackedBatch) -> list[torch.Tensor]:
        """One optimizer step of every active run; returns their losses (on the device)."""
        for member in active:
            config = member.config
            step, total = (epoch - 1) * member.steps_per_epoch + index, member.steps_per_epoch * config.epochs
            for group in member.optimizer.param_groups:
                group["lr"] = config.lr * (1 - step / total if config.schedule == "linear" else 1.0)
        _STEP.append(_Routing(batch, active))
        try:
            with torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16_autocast else nullcontext():
                logits = packed_logits(self.model, batch)
        finally:
            _STEP.pop()
        token_loss = torch.nn.functional.cross_entropy(logits.float(), batch.labels, reduction="none")
        losses = [token_loss[span.label_start:span.label_end].sum() / (span.label_end - span.label_start)
                  for span in batch.spans]
        torch.stack(losses).sum().backward()
        for member in active:
            tensors = [p for _, p in member.params]
            if member.config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(tensors, member.config.max_grad_norm)
            member.optimizer.step()
            member.optimizer.zero_grad(set_to_none=True)
        return [loss.detach() for loss in losses]

    def _save(self, member: Member, epoch: int, log_rows: list[dict]) -> None:
        """The run's log rows and epoch folder, as the solo loop writes them (log first, then the epoch)."""
        member.log_rows += log_rows
        run = member.prepared.run
        write_parquet(run.file(TRAIN_LOG_FILE), pa.Table.from_pylist(member.log_rows, schema=TRAIN_LOG_SCHEMA))
        save_epoch(run.file(EPOCHS_DIR), epoch, member.adapter_state(), member.adapter_config, member.optimizer,
                   member.params)
        run.note(epochs_done=epoch, epoch_loss=epoch_losses(member.log_rows))

    @contextmanager
    def attached(self) -> Iterator[None]:
        """Every module some run adapts adds each run's LoRA output on its span while the block runs."""
        from knowpack.probe.adapters import patched_forwards

        paths = sorted({path for m in self.members for path in m.weights})
        requires_grad = {name: p.requires_grad for name, p in self.model.named_parameters()}
        was_training = self.model.training
        self.model.requires_grad_(False)  # the base stays frozen: gradients for the runs' adapters only
        try:
            with patched_forwards(self.model, paths, _lora_forward):
                yield
        finally:
            for name, p in self.model.named_parameters():
                p.requires_grad_(requires_grad[name])
            self.model.train(was_training)



def _lora_forward(path: str, base_forward):
    """The base output plus every run's LoRA output on its own tokens, in two matmuls for the whole group: the
    runs' A stacked (x @ [A₁; …; A_G]ᵀ gives each token every run's r columns), the columns of other runs zeroed
    and each run's own scaled (``_Routing.columns``), then @ [B₁ … B_G]ᵀ. A per-run loop of small matmuls made
    a 16-run step launch-bound (twice the time of one 128-row run on an H200)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = base_forward(x)
        routing = _STEP[-1]
        # A run that diverges (inf/nan) must not reach the others through 0 × inf, neither in these matmuls nor
        # in their weight gradients (which sum over every token): non-finite weights, inputs and gradients count
        # as 0 here. The diverging run's own parameters stay as they are and fail it at the epoch's end.
        a = _finite(torch.cat([member.weights[path][0] for member in routing.members]))
        b = _finite(torch.cat([member.weights[path][1] for member in routing.members], dim=1))
        rows = _finite(x[0] if torch.is_autocast_enabled(x.device.type) else x[0].to(a.dtype))
        keep = routing.dropout_mask(rows)
        if keep is not None:
            rows = rows * keep
        own = torch.where(routing.owned, (rows @ a.T) * routing.columns, 0.0)
        delta = own @ b.T
        if delta.requires_grad:
            delta.register_hook(_finite)
        return out + delta.to(out.dtype)[None]

    return forward


def _finite(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.nan_to_num(0.0, 0.0, 0.0)


class _Routing:
    """Which packed tokens belong to which run, for one step: ``columns`` (tokens × Σ ranks) holds each run's
    scaling (over its keep probability, when it has dropout) on its own tokens' columns and zeros elsewhere."""

    def __init__(self, batch: PackedBatch, members: list[Member]):
        self.members, self.batch = members, batch
        self.spans = list(zip(batch.spans, members, strict=True))
        ranks = [member.config.rank for member in members]
        columns = torch.zeros(batch.input_ids.shape[1], sum(ranks))
        first = 0
        for (span, member), rank in zip(self.spans, ranks):
            scale = member.weights[next(iter(member.weights))][2] / (1 - member.config.dropout)
            rows = slice(span.start, span.end) if span.real is None else span.start + span.real.cpu()
            columns[rows, first:first + rank] = scale
            first += rank
        self.columns = columns.to(batch.input_ids.device, non_blocking=True)
        self.owned = self.columns != 0
        self.any_dropout = any(member.config.dropout for member in members)

    def dropout_mask(self, rows: torch.Tensor) -> torch.Tensor | None:
        """0/1 keep mask of a module's input: each run's from its own generator over its own real tokens (the
        same draws whatever the group), zero on padding; None without dropout."""
        if not self.any_dropout:
            return None
        keep = torch.zeros_like(rows) if any(span.real is not None for span, _ in self.spans) else \
            torch.empty_like(rows)
        for span, member in self.spans:
            target = keep[span.start:span.end]
            p = member.config.dropout
            if span.real is None:
                target.bernoulli_(1 - p, generator=member.generator) if p else target.fill_(1)
            else:
                drawn = torch.empty(len(span.real), rows.shape[1], dtype=rows.dtype, device=rows.device)
                drawn.bernoulli_(1 - p, generator=member.generator) if p else drawn.fill_(1)
                target.index_copy_(0, span.real, drawn)
        return keep
