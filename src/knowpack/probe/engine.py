"""Batched generation that computes each few-shot prefix once and shares it across the whole batch.

In knowledge probing every question under one prompt set shares the same ~150-token few-shot prefix and differs
only in ~20 question tokens, yet plain ``model.generate`` recomputes (and copies into every row's KV cache) the
full prompt for every question. This engine:

* runs the prefix once per (prompt set, adapter) and keeps its keys/values as ONE shared tensor;
* runs the questions' suffixes in a batch whose rows attend to the shared prefix (never copied per row) plus
  their own tokens, through an attention function registered with transformers' ``AttentionInterface`` — so
  the model's own projections, norms, rotary embeddings and peft LoRA layers do the rest, for any decoder whose
  layers route attention through that interface;
* gives every suffix token its true position (prefix length + index), so the result is the same computation as
  the unpadded prompt: greedy answers equal ``model.generate``'s;
* sorts suffixes by length, stops each row at the end of its answer (end-of-sequence/turn, or a newline after
  the answer began) and drops finished rows from the batch;
* runs the greedy answer and N samples of a prompt from one suffix pass (rows are forked after it);
* mixes several LoRA adapters of one base model in one batch, each with its own prefix: plain LoRA adapters through
  ``probe.adapters.StackedAdapters`` (the base model's speed), others through peft's ``adapter_names``; on a GPU
  every row reads its own adapter's prefix through one grouped matmul a layer (``torch._grouped_mm``), not a loop
  over the adapters;
* on a GPU, replays each decode step as a CUDA graph (``_CapturedStep``): a small model's step is bound by the host
  launching its ~20 kernels a layer one by one, and a graph launches them all at once.

Sampling is seeded per (prompt, sample): each sampled token comes from one counter-based uniform number, so an
answer does not depend on batch size or on what else is in the batch (resumed runs draw the same answers).
Attention has the numerics of transformers' eager attention (the study's setting): scores and weighted sums in the
model's dtype, softmax in float32.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AttentionInterface

from knowpack.errors import InputError
from knowpack.models import attention_implementation
from knowpack.probe.backends import Decoding, Generation, Job
from knowpack.probe.stops import StopRule

ATTENTION_NAME = "knowpack_shared_prefix"
BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in adapter_names
# Suffix tokens per prefill slice, for a model as wide as PREFILL_WIDTH: big enough for efficient matmuls, small
# enough to cut padding. A slice's activations scale with tokens × width, so a narrower model takes proportionally
# more tokens a slice (else its prefill is a string of small passes that wait on the host).
PREFILL_TOKENS = 8192
PREFILL_WIDTH = 4096
# On a GPU key lengths are rounded up to this many slots (the extra slots are masked): a matmul over e.g. 141 keys
# falls back to slow unaligned kernels, over 144 it does not. A CPU gains nothing from it.
GPU_KEY_ALIGNMENT = 16
CPU_KEY_ALIGNMENT = 1
GRAPH_DEVICES = {"cuda"}  # where decode steps are captured as graphs: devices whose steps wait on the host
GROUPED_MM_CAPABILITY = (9, 0)  # torch._grouped_mm's kernels: Hopper and later
GROUPED_MM_DTYPES = {torch.bfloat16}


# ---------------------------------------------------------------- shared-prefix attention


class _BatchState:
    """Per-batch attention state: the shared prefixes' keys/values and each row's own keys/values.

    Row storage is left-padded: row r's tokens sit in slots ``pad[r]:``; new tokens are written at the common
    slot ``length`` for all rows, read from a device counter (``slot``) so that a captured step replays at the
    right place. Rows are sorted by prefix group, ``groups`` lists (start, end, group index). With ``fixed``
    shapes a pass sees every slot (those not yet written are masked), so every decode step has the same shapes.
    """

    def __init__(self, pad: torch.Tensor, capacity: int, prefix_len: int,
                 prefix_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] | None,
                 groups: list[tuple[int, int, int]]):
        self.pad = pad
        self.capacity = capacity
        self.alignment = GPU_KEY_ALIGNMENT if pad.is_cuda else CPU_KEY_ALIGNMENT
        self.slots = self._aligned(capacity)
        self.prefix_len = prefix_len
        self.prefix_kv = prefix_kv or {}
        self.prefixes = next(iter(self.prefix_kv.values()))[0].shape[1] if self.prefix_kv else 0
        self._set_groups(groups)
        self.length = 0
        self.slot = torch.zeros(1, dtype=torch.long, device=pad.device)
        self.fixed = False
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.blocked: torch.Tensor | None = None
        self.query_slots: torch.Tensor | None = None
        self.query_len = 0
        self.max_position = 0
        self._segment_ends: dict[tuple[int, int], torch.Tensor] = {}

    def begin(self, query_len: int, max_position: int) -> None:
        """Prepare the mask for a forward pass that adds ``query_len`` tokens to every row."""
        self.check_room(query_len)
        visible = self.slots if self.fixed else min(self.slots, self._aligned(self.length + query_len))
        key_slot = torch.arange(visible, device=self.pad.device)
        query_slot = self.slot + torch.arange(query_len, device=self.pad.device)
        causal = key_slot[None, :] <= query_slot[:, None]  # also hides the slots not yet written
        own = (key_slot[None, None, :] >= self.pad[:, None, None]) | (key_slot[None, :] == query_slot[:, None])[None]
        self.blocked = ~(own & causal[None])[:, None, None]  # (rows, 1, 1, query, key)
        self.query_slots = query_slot
        self.query_len = query_len
        self.max_position = max_position
        self._segment_ends = {}

    def end(self) -> None:
        self.length += self.query_len
        self.slot += self.query_len

    def check_room(self, query_len: int) -> None:
        if self.length + query_len > self.capacity:
            raise RuntimeError("batch state capacity exceeded")

    def _aligned(self, length: int) -> int:
        return -(-length // self.alignment) * self.alignment

    def _allocate(self, layer: int, rows: int, heads: int, key_dim: int, value_dim: int, dtype, device) -> None:
        # Zeros, not garbage: masked slots get probability 0, and 0 × NaN would still poison the sum.
        self.keys[layer] = torch.zeros(rows, heads, self.slots, key_dim, dtype=dtype, device=device)
        self.values[layer] = torch.zeros(rows, heads, self.slots, value_dim, dtype=dtype, device=device)

    def write(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layer not in self.keys:
            rows, heads, _, dim = key.shape
            self._allocate(layer, rows, heads, dim, value.shape[-1], key.dtype, key.device)
        self.keys[layer].index_copy_(2, self.query_slots, key)
        self.values[layer].index_copy_(2, self.query_slots, value)
        visible = self.blocked.shape[-1]
        return self.keys[layer][:, :, :visible], self.values[layer][:, :, :visible]

    def adopt(self, part: "_BatchState", start: int, end: int, width: int) -> None:
        """Take rows ``start:end`` from a state that prefilled them alone, right-aligned at slot ``width``."""
        filled = part.length
        for layer, keys in part.keys.items():
            if layer not in self.keys:
                self._allocate(layer, len(self.pad), keys.shape[1], keys.shape[-1], part.values[layer].shape[-1],
                               keys.dtype, keys.device)
            self.keys[layer][start:end, :, width - filled:width] = keys[:, :, :filled]
            self.values[layer][start:end, :, width - filled:width] = part.values[layer][:, :, :filled]
        self.length = width
        self.slot.fill_(width)

    def select(self, index: torch.Tensor, groups: list[tuple[int, int, int]]) -> None:
        """Keep (or repeat) the rows in ``index``; rows must stay sorted by prefix group."""
        self.pad = self.pad[index]
        for store in (self.keys, self.values):
            for layer in store:
                store[layer] = store[layer][index]
        self._set_groups(groups)

    def _set_groups(self, groups: list[tuple[int, int, int]]) -> None:
        """The rows' prefix groups, and on a device with grouped matmuls each prefix's last row + 1 (a prefix
        without rows ends where the one before it ends), made here: a captured step cannot copy from the host."""
        self.groups = groups
        self.group_ends = None
        if self.prefixes > 1 and _grouped_matmuls(self.pad):
            ends = [0] * self.prefixes
            for _, end, group in groups:
                ends[group] = end
            self.group_ends = torch.tensor(np.maximum.accumulate(ends), dtype=torch.int32, device=self.pad.device)

    def segment_ends(self, per_row: int, heads: int) -> torch.Tensor:
        """``torch._grouped_mm``'s offsets for rows laid out (head, row, per_row): one segment per (head, prefix)."""
        key = (per_row, heads)
        if key not in self._segment_ends:  # once a pass, not once a layer
            starts = torch.arange(heads, dtype=torch.int32, device=self.pad.device)[:, None] * (len(self.pad) * per_row)
            self._segment_ends[key] = (starts + self.group_ends[None, :] * per_row).flatten()
        return self._segment_ends[key]


_ACTIVE: list[_BatchState] = []


def _shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                             softcap=None, sliding_window=None, **kwargs):
    """Attention of each row's queries over the shared prefix of its group plus the row's own tokens."""
    state = _ACTIVE[-1]
    if kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None:
        raise InputError(f"{type(module).__name__}: attention sinks are not supported by the prefix engine")
    if sliding_window is not None and state.max_position >= sliding_window:
        raise InputError(
            f"prompts reach position {state.max_position}, beyond the model's sliding window {sliding_window}; "
            "the prefix engine does not implement sliding-window attention"
        )
    layer = module.layer_idx
    keys, values = state.write(layer, key, value)
    rows, q_heads, q_len, dim = query.shape
    kv_heads = keys.shape[1]
    group = q_heads // kv_heads
    scale = scaling if scaling is not None else dim ** -0.5
    # (rows, kv_heads, group*q_len, dim): query head h reads kv head h // group, as repeat_kv does.
    q = query.reshape(rows, kv_heads, group * q_len, dim)
    scores = torch.matmul(q, keys.transpose(-1, -2)) * scale
    scores = scores.view(rows, kv_heads, group, q_len, -1)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(state.blocked, -math.inf).view(rows, kv_heads, group * q_len, -1)
    prefix = state.prefix_kv.get(layer)
    if prefix is None:
        out = torch.matmul(_softmax(scores), values)
    else:
        prefix_keys, prefix_values_t = prefix  # (kv_heads, prefixes, slots, dim), (kv_heads, prefixes, dim, slots)
        prefix_slots = prefix_keys.shape[2]
        per_row = group * q_len
        by_head = q.transpose(0, 1).reshape(kv_heads, rows * per_row, dim)
        prefix_scores = _matmul_by_group(by_head, prefix_keys.transpose(-1, -2), state, per_row) * scale
        prefix_scores = prefix_scores.view(kv_heads, rows, per_row, prefix_slots).transpose(0, 1)
        if softcap is not None:
            prefix_scores = torch.tanh(prefix_scores / softcap) * softcap
        prefix_scores[..., state.prefix_len:] = -math.inf  # slots past the prefix hold zeros
        probs = _softmax(torch.cat([prefix_scores, scores], dim=-1))
        out = torch.matmul(probs[..., prefix_slots:], values).float()  # the two parts summed before rounding
        prefix_probs = probs[..., :prefix_slots].transpose(0, 1).reshape(kv_heads, rows * per_row, prefix_slots)
        part = _matmul_by_group(prefix_probs, prefix_values_t.transpose(-1, -2), state, per_row)
        out += part.view(kv_heads, rows, per_row, -1).transpose(0, 1)
    out = out.view(rows, kv_heads, group, q_len, -1).reshape(rows, q_heads, q_len, -1)
    return out.transpose(1, 2).to(query.dtype).contiguous(), None


def _grouped_matmuls(like: torch.Tensor) -> bool:
    """Whether ``torch._grouped_mm`` (one kernel for many row groups, each times its own matrix) serves tensors
    like ``like``: on a GPU of compute capability 9 or more. Elsewhere each group runs its own matmul."""
    return (like.is_cuda and hasattr(torch, "_grouped_mm")
            and torch.cuda.get_device_capability(like.device) >= GROUPED_MM_CAPABILITY)


def _matmul_by_group(x: torch.Tensor, matrices: torch.Tensor, state: _BatchState, per_row: int) -> torch.Tensor:
    """Each row group's part of ``x`` (heads, rows · per_row, k) times its own prefix's matrix of ``matrices``
    (heads, prefixes, k, n). With several prefixes on a GPU this is one grouped matmul (its kernels need rows of
    16-byte multiples: the GPU's aligned key slots): a loop over the groups launches a few kernels per group in
    every layer, which is what made many adapters in one pass slow."""
    heads, prefixes = matrices.shape[:2]
    if prefixes == 1:
        return torch.matmul(x, matrices[:, 0])
    if (state.group_ends is not None and x.dtype in GROUPED_MM_DTYPES
            and all(size * x.element_size() % 16 == 0 for size in (x.shape[-1], matrices.shape[-1]))):
        out = torch._grouped_mm(x.reshape(-1, x.shape[-1]), matrices.flatten(0, 1),
                                offs=state.segment_ends(per_row, heads))
        return out.view(heads, x.shape[1], -1)
    out = x.new_empty(heads, x.shape[1], matrices.shape[-1])
    for start, end, g in state.groups:
        out[:, start * per_row:end * per_row] = torch.matmul(x[:, start * per_row:end * per_row], matrices[:, g])
    return out


def _softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax in float32, back in the scores' dtype: the numerics of transformers' eager attention."""
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(scores.dtype)


AttentionInterface.register(ATTENTION_NAME, _shared_prefix_attention)


@contextmanager
def _prefix_attention(model, state: _BatchState):
    """Route the model's attention through the shared-prefix function for one forward pass."""
    _ACTIVE.append(state)
    try:
        with attention_implementation(model, ATTENTION_NAME):
            yield
    finally:
        _ACTIVE.pop()


# ---------------------------------------------------------------- sampling


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_uniforms(seeds: Sequence[int], samples: Sequence[int], steps: int) -> np.ndarray:
    """Uniform numbers in [0, 1), one per (row, step), a pure function of (seed, sample index, step)."""
    with np.errstate(over="ignore"):
        base = _splitmix64(np.asarray(seeds, dtype=np.uint64) ^ _splitmix64(np.asarray(samples, dtype=np.uint64)))
        counters = base[:, None] + np.arange(steps, dtype=np.uint64)[None, :] * np.uint64(0xD1B54A32D192ED03)
        bits = _splitmix64(counters) >> np.uint64(11)
    return bits.astype(np.float64) / float(1 << 53)


# ---------------------------------------------------------------- CUDA graphs


class _CapturedStep:
    """One decode step of a batch's current rows, captured as a CUDA graph and replayed for each next token.

    The graph replays fixed tensors: the step's inputs are copied into ``ids`` / ``positions``, the batch state
    has fixed shapes and advances its own write slot on the device, and the logits land in one tensor that the
    next replay overwrites. Captured after an uncaptured run of the same step, which leaves the kernels warm.
    Off a GPU nothing is captured and each call runs the step (the same steps, for tests on a CPU).
    """

    def __init__(self, forward, state: _BatchState, ids: torch.Tensor, positions: torch.Tensor):
        self.state, self.forward = state, forward
        self.graph = None
        if not ids.is_cuda:
            return
        self.ids, self.positions = ids.clone(), positions.clone()
        self.graph = torch.cuda.CUDAGraph()
        length = state.length
        # Captured on a side stream as ``torch.cuda.graph`` does, without its emptying of the allocator's cache
        # (which every later batch would pay for in fresh allocations).
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(stream):
                self.graph.capture_begin()
                try:
                    self.logits = forward(self.ids, self.positions)
                finally:
                    self.graph.capture_end()
        finally:
            torch.cuda.current_stream().wait_stream(stream)
            state.length = length  # capturing ran no step: the Python bookkeeping of ``end`` is undone

    def __call__(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if self.graph is None:
            return self.forward(ids, positions)
        self.state.check_room(ids.shape[1])
        self.ids.copy_(ids)
        self.positions.copy_(positions)
        self.graph.replay()
        self.state.length += ids.shape[1]
        return self.logits


# ---------------------------------------------------------------- engine


class PrefixEngine:
    """Generates answers for many prompts that share few-shot prefixes.

    ``model`` may be a peft model holding several adapters; a job's ``adapter`` names one of them (None = the
    base model). ``batch_size`` counts generated sequences (a prompt with N samples takes 1 + N rows).
    ``graphs``: decode with fixed shapes, each step a replayed CUDA graph (default: on a GPU, unless adapters go
    through peft, whose mixed batches are built on the host); on a CPU the same steps run uncaptured.
    """

    def __init__(self, model, tokenizer, decoding: Decoding, batch_size: int = 64, router=None,
                 graphs: bool | None = None):
        decoding.validate()
        self.router = router  # StackedAdapters serving the jobs' adapters (else peft's adapter_names)
        self.model = model
        self.decoding = decoding
        self.batch_size = max(1, batch_size)
        self.device = next(model.parameters()).device
        vocab = model.get_output_embeddings().weight.shape[0]
        self.stop = StopRule(model, tokenizer, vocab, decoding.stop_at_newline, self.device)
        self.uses_adapters = router is not None or hasattr(model, "peft_config")
        # reading "who finished" waits for the device; on a GPU look every few steps (finished rows idle meanwhile)
        self.check_every = 1 if self.device.type == "cpu" else 4
        width = model.get_input_embeddings().weight.shape[1]
        self.prefill_tokens = PREFILL_TOKENS * max(1, PREFILL_WIDTH // width)
        through_peft = hasattr(model, "peft_config") and router is None
        self.graphs = (self.device.type in GRAPH_DEVICES and not through_peft) if graphs is None else graphs
        self._prefix_cache: dict[tuple[tuple[int, ...], str | None], dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
        self._cached_prefix: tuple[int, ...] | None = None

    def batches(self, jobs: Sequence[Job]) -> list[list[int]]:
        """Job indices grouped by prefix, sorted by suffix length, cut to the batch size."""
        per_job = 1 + self.decoding.n_samples
        size = max(1, self.batch_size // per_job)
        by_prefix: dict[tuple[int, ...], list[int]] = {}
        for i, job in enumerate(jobs):
            by_prefix.setdefault(job.prefix, []).append(i)
        out = []
        for indices in by_prefix.values():
            indices.sort(key=lambda i: (len(jobs[i].suffix), jobs[i].adapter or ""))
            out.extend(indices[k:k + size] for k in range(0, len(indices), size))
        return out

    def generate(self, jobs: Sequence[Job]) -> Iterator[tuple[list[int], list[list[Generation]]]]:
        """Yield (job indices, generations per job: greedy first, then the samples) batch by batch."""
        for batch in self.batches(jobs):
            yield batch, self.generate_batch([jobs[i] for i in batch])

    @torch.inference_mode()
    def generate_batch(self, jobs: Sequence[Job]) -> list[list[Generation]]:
        """Answer jobs that share one prefix (they may use different adapters)."""
        prefix = jobs[0].prefix
        if any(job.prefix != prefix for job in jobs):
            raise ValueError("generate_batch needs jobs with one shared prefix")
        if not self.uses_adapters and any(job.adapter is not None for job in jobs):
            raise ValueError("jobs name adapters but the model holds none")
        # rows sorted by adapter (each adapter's rows read its own prefix), then by suffix length
        order = sorted(range(len(jobs)), key=lambda i: (jobs[i].adapter or "", len(jobs[i].suffix)))
        jobs = [jobs[i] for i in order]
        adapters = sorted({job.adapter for job in jobs}, key=lambda a: a or "")
        prefix_kv = self._prefix_kv(prefix, adapters)
        group_of = [adapters.index(job.adapter) for job in jobs]
        decoding = self.decoding
        device = self.device
        prefix_len = len(prefix)
        max_position = prefix_len + max(len(job.suffix) for job in jobs) + decoding.max_new_tokens

        lengths = torch.tensor([len(job.suffix) for job in jobs], device=device)
        width = int(lengths.max())
        state = _BatchState(width - lengths, width + decoding.max_new_tokens, prefix_len, prefix_kv, _slices(group_of))
        logits = self._prefill(state, jobs, group_of, width, max_position)

        # fork rows: greedy + samples per job (suffix keys/values are copied, the prefix stays shared)
        per_job = 1 + decoding.n_samples
        row_job = [r for r in range(len(jobs)) for _ in range(per_job)]
        row_sample = [s for _ in range(len(jobs)) for s in range(per_job)]
        if per_job > 1:
            fork = torch.tensor(row_job, device=device)
            state.select(fork, _slices([group_of[j] for j in row_job]))
            logits = logits[fork]
            lengths = lengths[fork]
        uniforms = torch.from_numpy(
            sample_uniforms([jobs[j].seed for j in row_job], row_sample, decoding.max_new_tokens)
        ).to(device=device, dtype=torch.float32)
        is_sample = torch.tensor([s > 0 for s in row_sample], device=device)

        n_rows = len(row_job)
        tokens = torch.zeros(n_rows, decoding.max_new_tokens, dtype=torch.long, device=device)
        stop_at = torch.full((n_rows,), -1, dtype=torch.long, device=device)
        active = torch.arange(n_rows, device=device)  # original row of each live row
        active_list = list(range(n_rows))
        seen_visible = torch.zeros(n_rows, dtype=torch.bool, device=device)
        state.fixed = self.graphs
        captured: _CapturedStep | None = None  # the step of the current rows, once captured
        for step in range(decoding.max_new_tokens):
            next_tokens = self._choose(logits[:, -1], is_sample[active], uniforms[active, step])
            tokens[active, step] = next_tokens
            if step + 1 >= decoding.min_new_tokens:
                finished, seen_visible[active] = self.stop.step(next_tokens, seen_visible[active])
                live_stop = stop_at[active]
                stop_at[active] = torch.where(finished & (live_stop < 0), step, live_stop)
            if step + 1 == decoding.max_new_tokens:
                break
            if step + 1 >= decoding.min_new_tokens and (step + 1) % self.check_every == 0:
                alive = (stop_at[active] < 0).tolist()
                if not any(alive):
                    break
                # A captured step is replayed on its rows: drop finished rows (and capture again) once half are
                # done, not at every finish; until then a finished row costs the GPU its arithmetic, not the host.
                if not all(alive) and (captured is None or sum(alive) * 2 <= len(alive)):
                    keep = [i for i, a in enumerate(alive) if a]
                    keep_t = torch.tensor(keep, device=device)
                    active_list = [active_list[i] for i in keep]
                    active = active[keep_t]
                    next_tokens = next_tokens[keep_t]
                    state.select(keep_t, _slices([group_of[row_job[r]] for r in active_list]))
                    captured = None
            positions = (prefix_len + lengths[active] + step)[:, None]
            if captured is not None:
                logits = captured(next_tokens[:, None], positions)
                continue
            adapters = [jobs[row_job[r]].adapter for r in active_list]
            logits = self._forward(state, next_tokens[:, None], positions, adapters, max_position)
            if self.graphs:  # that step, run once, warmed the kernels up
                try:
                    captured = _CapturedStep(
                        lambda ids, pos: self._forward(state, ids, pos, adapters, max_position), state,
                        next_tokens[:, None], positions)
                except RuntimeError as err:  # a forward that asks the host something (dynamic rotary scaling, …)
                    self.graphs = False
                    print(f"knowpack: decoding without CUDA graphs, this model's step cannot be captured "
                          f"({str(err).strip().splitlines()[0][:200]})", file=sys.stderr, flush=True)

        tokens_cpu = tokens.cpu().tolist()
        stops = stop_at.cpu().tolist()
        results: list[list[Generation]] = [[] for _ in jobs]
        for row, job_index in enumerate(row_job):
            end = stops[row] + 1 if stops[row] >= 0 else decoding.max_new_tokens
            results[job_index].append(Generation(tuple(tokens_cpu[row][:end]), stops[row] >= 0))
        restored: list[list[Generation]] = [[] for _ in jobs]
        for sorted_pos, original in enumerate(order):
            restored[original] = results[sorted_pos]
        return restored

    def _prefill(self, state: _BatchState, jobs: Sequence[Job], group_of: list[int], width: int,
                 max_position: int) -> torch.Tensor:
        """Run the suffixes in slices of about ``prefill_tokens`` tokens (padding counted), each row at its true
        positions after the prefix; the slices' keys/values land right-aligned in ``state``. A slice may hold rows
        of several adapters (each row reads its own prefix): fewer passes, for a little more padding where one
        adapter's longest rows meet the next one's shortest. Returns last-token logits."""
        device = self.device
        prefix_len = len(jobs[0].prefix)
        logits = []
        start = 0
        while start < len(jobs):
            end, part_width = start + 1, len(jobs[start].suffix)
            while end < len(jobs):
                wider = max(part_width, len(jobs[end].suffix))
                if (end + 1 - start) * wider > self.prefill_tokens:
                    break
                end, part_width = end + 1, wider
            part_jobs = jobs[start:end]
            ids = torch.tensor([[0] * (part_width - len(job.suffix)) + list(job.suffix) for job in part_jobs])
            pad = torch.tensor([part_width - len(job.suffix) for job in part_jobs], device=device)
            slots = torch.arange(part_width, device=device)
            positions = (prefix_len + slots[None, :] - pad[:, None]).clamp(min=prefix_len)
            part = _BatchState(pad, part_width, prefix_len, state.prefix_kv, _slices(group_of[start:end]))
            logits.append(self._forward(part, ids.to(device), positions, [job.adapter for job in part_jobs],
                                        max_position))
            state.adopt(part, start, end, width)
            start = end
        return torch.cat(logits)

    def _choose(self, logits: torch.Tensor, is_sample: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """Greedy argmax, or inverse-CDF sampling at the temperature for sample rows (no host sync)."""
        chosen = torch.argmax(logits, dim=-1)
        if not self.decoding.n_samples:
            return chosen
        probs = torch.softmax(logits.float() / self.decoding.temperature, dim=-1)
        cdf = torch.cumsum(probs, dim=-1)
        picked = torch.searchsorted(cdf, (uniforms * cdf[:, -1])[:, None]).squeeze(1).clamp(max=logits.shape[-1] - 1)
        return torch.where(is_sample, picked, chosen)

    def _forward(self, state: _BatchState, ids: torch.Tensor, positions: torch.Tensor,
                 adapters: list[str | None], max_position: int) -> torch.Tensor:
        state.begin(ids.shape[1], max_position)
        extra = {}
        routed = self.router.route(adapters) if self.router is not None else nullcontext()
        if self.uses_adapters and self.router is None:
            extra["adapter_names"] = [a if a is not None else BASE_ADAPTER for a in adapters]
        with _prefix_attention(self.model, state), routed:
            out = self.model(input_ids=ids, position_ids=positions, use_cache=False, logits_to_keep=1, **extra)
        state.end()
        return out.logits

    def _prefix_kv(self, prefix: tuple[int, ...], adapters: list[str | None]):
        """Shared keys/values of ``prefix`` per adapter, stacked in ``adapters`` order (computed once each)."""
        if prefix != self._cached_prefix:
            self._prefix_cache.clear()
            self._cached_prefix = prefix
        missing = [a for a in adapters if (prefix, a) not in self._prefix_cache]
        if missing and prefix:
            rows = len(missing)
            state = _BatchState(torch.zeros(rows, dtype=torch.long, device=self.device), len(prefix), 0, None,
                                [(0, rows, 0)])
            ids = torch.tensor([prefix] * rows, device=self.device)
            positions = torch.arange(len(prefix), device=self.device)[None].expand(rows, -1)
            self._forward(state, ids, positions, missing, len(prefix))
            for r, adapter in enumerate(missing):
                self._prefix_cache[(prefix, adapter)] = {
                    layer: (state.keys[layer][r].clone(), state.values[layer][r].clone()) for layer in state.keys
                }
        if not prefix:
            return None
        layers = self._prefix_cache[(prefix, adapters[0])].keys()
        # keys (kv_heads, prefixes, slots, dim); values transposed, (kv_heads, prefixes, dim, slots), so that both
        # enter a grouped matmul in the column-major layout its kernels take
        return {
            layer: (
                torch.stack([self._prefix_cache[(prefix, a)][layer][0] for a in adapters], dim=1),
                torch.stack([self._prefix_cache[(prefix, a)][layer][1] for a in adapters], dim=1)
                .transpose(-1, -2).contiguous(),
            )
            for layer in layers
        }


def _slices(groups: Sequence[int]) -> list[tuple[int, int, int]]:
    """Contiguous runs of equal group index: [(start, end, group)]."""
    out: list[tuple[int, int, int]] = []
    for i, g in enumerate(groups):
        if out and out[-1][2] == g:
            out[-1] = (out[-1][0], i + 1, g)
        else:
            out.append((i, i + 1, g))
    return out
