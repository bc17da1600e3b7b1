"""Packed training rows: a step's rows in one sequence of real tokens, each row attending only to itself.

Rows are 40–70 tokens, so padding every row to the longest wastes compute, and one long packed sequence with a
block-diagonal mask makes attention cost grow with the step's token count squared (at 3.5k tokens on an 8B model
it took most of the step). So rows are concatenated (position ids restart at each row, so a row computes exactly
what it would alone) and attention is computed per row group:

* on CUDA with a half-precision model and passes of over ``VARLEN_MIN_TOKENS`` tokens, by flash attention over
  variable-length rows (``varlen_attn``, PyTorch ≥ 2.10): cost grows with each row's own length, no mask, no
  padding;
* otherwise rows are packed first-fit into *lanes* of about ``lane_tokens`` tokens (lane ends padded) and sdpa
  runs per lane with a block-diagonal causal mask: cost grows with tokens × lane length.

Logits are computed only where the loss reads them.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from knowpack.models import attention_implementation

try:
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # PyTorch < 2.10
    varlen_attn = None

LANE_ATTENTION = "knowpack_lanes"
VARLEN_ATTENTION = "knowpack_varlen"
# On CUDA, sdpa with a mask would pick cuDNN's fused attention, which sets up a plan per shape; packed steps have
# a new shape almost every time, and in a fresh process that cost 3-5 s per new shape on an H100 (8B shape).
# The memory-efficient kernel takes the same mask with no per-shape set-up. Backward uses the forward's kernel.
MASKED_SDPA_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
# Below this many tokens a pass is one lane and one masked sdpa call is faster than flash over rows (H100, 8B shape:
# 455 tokens 0.130 vs 0.167 s a step, 899: 0.129 vs 0.145 s; 1,791: 0.174 vs 0.157 s).
VARLEN_MIN_TOKENS = 1024


@dataclass
class GroupSpan:
    """Where one group of rows lies in a packed batch: tokens ``start:end`` of the sequence (its own lanes, so
    contiguous), of which ``real`` are its rows' tokens (indices from ``start``; None: all of them, no padding),
    and entries ``label_start:label_end`` of ``positions`` / ``labels``."""

    start: int
    end: int
    real: torch.Tensor | None
    label_start: int
    label_end: int


@dataclass
class PackedBatch:
    """Lanes of rows concatenated into one sequence of ``lanes × width`` tokens (lane ends padded); the loss is
    read at ``positions`` (indices into that sequence) and must predict ``labels``. ``segments`` numbers each
    token's row within its lane (-1: padding); ``starts`` are the offsets where each row or padding block begins,
    plus the total (flash attention's cumulative sequence lengths)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segments: torch.Tensor
    starts: torch.Tensor
    longest: int
    positions: torch.Tensor
    labels: torch.Tensor
    tokens: int  # real tokens, padding excluded
    lanes: int
    width: int
    varlen: bool  # attention by flash over the rows (else per lane with ``lane_mask``)
    spans: list[GroupSpan] = field(default_factory=list)  # one per row group (``pack(groups=...)``)

    def lane_mask(self) -> torch.Tensor:
        """Each lane's block-diagonal causal mask, (lanes, 1, width, width); pad tokens see each other only, so
        no query row is fully masked."""
        causal = torch.ones(self.width, self.width, dtype=torch.bool, device=self.segments.device).tril()
        return (causal & (self.segments[:, :, None] == self.segments[:, None, :]))[:, None]


def assign_lanes(lengths: list[int], lane_tokens: int) -> list[list[int]]:
    """Row indices per lane, first fit in row order; a row longer than ``lane_tokens`` gets a lane of its own."""
    lanes: list[list[int]] = []
    fill: list[int] = []
    for index, length in enumerate(lengths):
        for lane, used in enumerate(fill):
            if used + length <= lane_tokens:
                lanes[lane].append(index)
                fill[lane] += length
                break
        else:
            lanes.append([index])
            fill.append(length)
    return lanes


def pack(rows: list[tuple[list[int], int]], loss_on: str, device: torch.device, lane_tokens: int = 512,
         varlen: bool = False, groups: list[int] | None = None) -> PackedBatch:
    """Pack (token ids, prompt length) rows; ``loss_on`` "answer" reads the loss after the prompt only.
    ``varlen``: the model can run flash attention over rows (``uses_varlen``); long passes then get one lane.
    ``groups``: the rows are consecutive groups of these sizes, each packed into lanes of its own so that its
    tokens and labels are contiguous (``spans``): several runs trained in one pass (``grouped.py``)."""
    lengths = [len(ids) for ids, _ in rows]  # then padding blocks' lengths appended
    tokens = sum(lengths)
    varlen = varlen and tokens > VARLEN_MIN_TOKENS
    sizes = groups if groups is not None else [len(rows)]
    firsts = [sum(sizes[:g]) for g in range(len(sizes))]
    group_lanes = [[list(range(first, first + size))] if varlen else
                   [[first + i for i in lane] for lane in assign_lanes(lengths[first:first + size], lane_tokens)]
                   for first, size in zip(firsts, sizes)]
    lanes = [lane for per_group in group_lanes for lane in per_group]
    width = max(sum(lengths[i] for i in lane) for lane in lanes)
    ids, position_ids, segments, starts, positions, labels = [], [], [], [], [], []
    group_starts: list[tuple[int, int]] = []  # (first token, first label) of each group
    group_of_lane = [g for g, per_group in enumerate(group_lanes) for _ in per_group]
    for lane_index, lane in enumerate(lanes):
        if lane_index == 0 or group_of_lane[lane_index] != group_of_lane[lane_index - 1]:
            group_starts.append((len(ids), len(labels)))
        start_of_lane = len(ids)
        for segment, index in enumerate(lane):
            row, prompt_len = rows[index]
            start = len(ids)
            first = prompt_len - 1 if loss_on == "answer" else 0
            starts.append(start)
            ids += row
            position_ids += range(len(row))
            segments += [segment] * len(row)
            positions += range(start + first, start + len(row) - 1)
            labels += row[first + 1 :]
        padding = 0 if varlen else width - (len(ids) - start_of_lane)  # flash over rows needs no equal lanes
        if padding:
            starts.append(len(ids))
            lengths.append(padding)
        ids += [0] * padding
        position_ids += range(padding)
        segments += [-1] * padding
    pinned = device.type == "cuda"  # pinned host memory lets the copy run without stalling the GPU queue

    def to_device(values: list, dtype: torch.dtype = torch.long) -> torch.Tensor:
        tensor = torch.tensor(values, dtype=dtype)
        return (tensor.pin_memory() if pinned else tensor).to(device, non_blocking=pinned)

    group_spans = []
    if groups is not None:
        ends = group_starts[1:] + [(len(ids), len(labels))]
        for (start, label_start), (end, label_end) in zip(group_starts, ends):
            real = [i for i in range(end - start) if segments[start + i] >= 0]
            group_spans.append(GroupSpan(start, end, None if len(real) == end - start else to_device(real),
                                         label_start, label_end))
    n_lanes, width = (1, len(ids)) if varlen else (len(lanes), width)
    return PackedBatch(
        to_device([ids]), to_device([position_ids]), to_device(segments).view(n_lanes, width),
        to_device(starts + [len(ids)], torch.int32), max(lengths),
        to_device(positions), to_device(labels), tokens, n_lanes, width, varlen, group_spans,
    )


_ACTIVE: list[PackedBatch] = []


def _lane_attention(module, query, key, value, attention_mask, **kwargs):
    """sdpa per lane: (1, heads, lanes × width, dim) viewed as (lanes, heads, width, dim), the lanes' own mask."""
    batch = _ACTIVE[-1]

    def lanes_of(tensor: torch.Tensor) -> torch.Tensor:
        heads, dim = tensor.shape[1], tensor.shape[-1]
        return tensor.view(heads, batch.lanes, batch.width, dim).transpose(0, 1)

    backends = MASKED_SDPA_BACKENDS if query.is_cuda else [SDPBackend.MATH, SDPBackend.EFFICIENT_ATTENTION]
    with sdpa_kernel(backends):
        out, weights = sdpa_attention_forward(
            module, lanes_of(query), lanes_of(key), lanes_of(value), batch.lane_mask(), **kwargs
        )
    return out.reshape(1, batch.lanes * batch.width, *out.shape[2:]), weights


def _varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Causal flash attention within each row (and padding block): (1, heads, tokens, dim) as (tokens, heads, dim)."""
    batch = _ACTIVE[-1]
    q, k, v = (tensor[0].transpose(0, 1) for tensor in (query, key, value))
    if k.shape[1] != q.shape[1] and "enable_gqa" not in _VARLEN_OPTIONS:
        k, v = (tensor.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for tensor in (k, v))
    out = varlen_attn(q, k, v, batch.starts, batch.starts, batch.longest, batch.longest, scale=scaling,
                      **_VARLEN_OPTIONS)
    return out[None], None


def _varlen_options() -> dict:
    """Causal masking and grouped-query heads as this PyTorch's ``varlen_attn`` spells them (2.10: ``is_causal``;
    later: ``window_size``, ``enable_gqa``)."""
    parameters = inspect.signature(varlen_attn).parameters if varlen_attn is not None else {}
    options = {"is_causal": True} if "is_causal" in parameters else {"window_size": (-1, 0)}
    return options | ({"enable_gqa": True} if "enable_gqa" in parameters else {})


_VARLEN_OPTIONS = _varlen_options()
AttentionInterface.register(LANE_ATTENTION, _lane_attention)
AttentionInterface.register(VARLEN_ATTENTION, _varlen_attention)


def uses_varlen(model: torch.nn.Module) -> bool:
    """Whether packed rows of this model run through flash attention over variable-length rows: CUDA, half
    precision, sdpa or eager attention without attention dropout, and a PyTorch that has ``varlen_attn``."""
    parameter = next(model.parameters())
    return (
        varlen_attn is not None
        and parameter.is_cuda
        and parameter.dtype in (torch.bfloat16, torch.float16)
        and getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager")
        and not getattr(model.config, "attention_dropout", 0.0)
    )


@contextmanager
def _routed(model: torch.nn.Module, name: str, batch: PackedBatch) -> Iterator[None]:
    _ACTIVE.append(batch)
    try:
        with attention_implementation(model, name):
            yield
    finally:
        _ACTIVE.pop()


def packed_logits(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    """Logits at ``batch.positions`` only, each row attending only to itself.

    sdpa and eager models run attention by row (flash, ``batch.varlen``) or per lane with the lanes' masks
    (sdpa's math kernel is eager's computation). Other implementations (flash, flex) get rows from the position-id
    resets, which transformers reads as packed rows when no mask is given; for them a batch must be one lane.
    """
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation in ("sdpa", "eager"):
        route = _routed(model, VARLEN_ATTENTION if batch.varlen else LANE_ATTENTION, batch)
    elif batch.lanes > 1:
        raise ValueError(f"{implementation} attention packs rows by position ids: pack the batch into one lane")
    else:
        route = nullcontext()
    with route:
        return model(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            logits_to_keep=batch.positions,
            use_cache=False,
        ).logits[0]
