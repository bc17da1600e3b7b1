"""Packed training rows: a step's rows laid out in lanes, each row attending only to itself.

Rows are 40–70 tokens, so padding every row to the longest wastes compute, and one long packed sequence makes
attention cost grow with the step's token count squared (at 3.5k tokens on an 8B model it took most of the
step). Here rows are packed first-fit into *lanes* of about ``lane_tokens`` tokens; the lanes are concatenated
into one sequence for the model (so its projections see a single batch of real tokens), and attention runs per
lane with a block-diagonal causal mask: cost grows with tokens × lane length. Position ids restart at each row,
so a row computes exactly what it would alone. Logits are computed only where the loss reads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from knowpack.models import attention_implementation

LANE_ATTENTION = "knowpack_lanes"
# On CUDA, sdpa with a mask would pick cuDNN's fused attention, which sets up a plan per shape; packed steps have
# a new shape almost every time, and in a fresh process that cost 3-5 s per new shape on an H100 (8B shape).
# The memory-efficient kernel takes the same mask with no per-shape set-up. Backward uses the forward's kernel.
MASKED_SDPA_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@dataclass
class PackedBatch:
    """Lanes of rows concatenated into one sequence of ``lanes × width`` tokens (lane ends padded); the loss is
    read at ``positions`` (indices into that sequence) and must predict ``labels``. ``mask`` is each lane's
    block-diagonal causal mask, (lanes, 1, width, width)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    labels: torch.Tensor
    tokens: int  # real tokens, padding excluded
    lanes: int
    width: int


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


def pack(rows: list[tuple[list[int], int]], loss_on: str, device: torch.device, lane_tokens: int = 512) -> PackedBatch:
    """Pack (token ids, prompt length) rows; ``loss_on`` "answer" reads the loss after the prompt only."""
    lanes = assign_lanes([len(ids) for ids, _ in rows], lane_tokens)
    width = max(sum(len(rows[i][0]) for i in lane) for lane in lanes)
    ids, position_ids, segments, positions, labels = [], [], [], [], []
    for lane in lanes:
        start_of_lane = len(ids)
        for segment, index in enumerate(lane):
            row, prompt_len = rows[index]
            start = len(ids)
            first = prompt_len - 1 if loss_on == "answer" else 0
            ids += row
            position_ids += range(len(row))
            segments += [segment] * len(row)
            positions += range(start + first, start + len(row) - 1)
            labels += row[first + 1 :]
        padding = width - (len(ids) - start_of_lane)
        ids += [0] * padding
        position_ids += range(padding)
        segments += [-1] * padding  # pad tokens attend to each other only: no row is fully masked
    segment = torch.tensor(segments).view(len(lanes), width)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    mask = (causal & (segment[:, :, None] == segment[:, None, :]))[:, None]
    pinned = device.type == "cuda"  # pinned host memory lets the copy run without stalling the GPU queue

    def to_device(values) -> torch.Tensor:
        tensor = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=torch.long)
        return (tensor.pin_memory() if pinned else tensor).to(device, non_blocking=pinned)

    return PackedBatch(
        to_device([ids]), to_device([position_ids]), to_device(mask), to_device(positions), to_device(labels),
        sum(len(row) for row, _ in rows), len(lanes), width,
    )


_LANES: list[PackedBatch] = []


def _lane_attention(module, query, key, value, attention_mask, **kwargs):
    """sdpa per lane: (1, heads, lanes × width, dim) viewed as (lanes, heads, width, dim), the lanes' own mask."""
    batch = _LANES[-1]

    def lanes_of(tensor: torch.Tensor) -> torch.Tensor:
        heads, dim = tensor.shape[1], tensor.shape[-1]
        return tensor.view(heads, batch.lanes, batch.width, dim).transpose(0, 1)

    backends = MASKED_SDPA_BACKENDS if query.is_cuda else [SDPBackend.MATH, SDPBackend.EFFICIENT_ATTENTION]
    with sdpa_kernel(backends):
        out, weights = sdpa_attention_forward(
            module, lanes_of(query), lanes_of(key), lanes_of(value), batch.mask, **kwargs
        )
    return out.reshape(1, batch.lanes * batch.width, *out.shape[2:]), weights


AttentionInterface.register(LANE_ATTENTION, _lane_attention)


@contextmanager
def _lane_attention_for(model: torch.nn.Module, batch: PackedBatch) -> Iterator[None]:
    _LANES.append(batch)
    try:
        with attention_implementation(model, LANE_ATTENTION):
            yield
    finally:
        _LANES.pop()


def packed_logits(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    """Logits at ``batch.positions`` only, each row attending only to itself.

    sdpa and eager models run attention per lane with the lanes' masks (sdpa's math kernel is eager's
    computation). Other implementations (flash, flex) get rows from the position-id resets, which transformers
    reads as packed rows when no mask is given; for them a batch must be one lane (``lane_tokens`` large).
    """
    implementation = getattr(model.config, "_attn_implementation", None)
    by_lane = implementation in ("sdpa", "eager")
    if not by_lane and batch.lanes > 1:
        raise ValueError(f"{implementation} attention packs rows by position ids: pack the batch into one lane")
    with _lane_attention_for(model, batch) if by_lane else nullcontext():
        return model(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            logits_to_keep=batch.positions,
            use_cache=False,
        ).logits[0]
