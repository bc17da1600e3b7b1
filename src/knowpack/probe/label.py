"""The label stage's work: prompts → answers (through a generation backend) → response store → responses.parquet
and labels.parquet (``stage.py`` holds the config and entry points)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from knowpack.errors import InputError
from knowpack.kg.folder import questions_file
from knowpack.models import LoadedModel
from knowpack.probe.backends import BACKENDS, Decoding, Job
from knowpack.probe.folder import CATEGORIES, LABELS_FILE, LABELS_SCHEMA, RESPONSES_FILE, RESPONSES_SCHEMA, LabelFolder
from knowpack.probe.prompts import FORMAT_VERSION, PromptSet, PromptSettings, pool_fingerprint
from knowpack.probe.stage import LabelConfig, LabelTarget, Questions, exemplars_to_drop, read_probe_questions
from knowpack.probe.store import ResponseStore, item_key
from knowpack.runfolder import MANIFEST, atomic_path, open_run, read_manifest, sha256_file, write_parquet
from knowpack.text import extract_answer, lenient_key_match, normalize, normalized_aliases, strict_key_match
from knowpack.train.folder import WEIGHT_FILES
from knowpack.train.methods import names_target
from knowpack.train.methods.full import check_weights, is_full_weights, swapped_in

ENCODE_ROWS = 16384  # questions rendered and tokenised at a time (bounds memory for large question sets)
# responses.parquet row groups hold this many rows whatever the store's chunking, so a resumed run writes the
# same bytes as an uninterrupted one
RESPONSES_ROW_GROUP = 65_536


def label_targets(loaded: LoadedModel, config: LabelConfig, targets: Sequence[LabelTarget]) -> list[LabelFolder]:
    """Label every target not yet complete in one pass over the questions (see ``stage.run_loaded``)."""
    if len({Path(t.out).resolve() for t in targets}) != len(targets):
        raise InputError("label targets: two targets write the same folder")
    questions = read_probe_questions(config.questions, config.exemplars)
    config = dataclasses.replace(config, drop_exemplars=exemplars_to_drop(config, questions))
    chat = loaded.chat if config.chat is None else config.chat
    if chat and loaded.tokenizer.chat_template is None:
        raise InputError(f"{loaded.spec}: has no chat template; label it with chat off (--no-chat)")
    settings = PromptSettings(config.n_prompts, config.shots, config.exemplars, config.exemplar_seed, chat,
                              config.drop_exemplars)
    decoding = config.decoding()
    decoding.validate()
    prompts = PromptSet(loaded.tokenizer, settings, questions.questions, questions.relations, questions.answers)
    numerics = loaded.numerics()

    pending: list[_Pending] = []
    for index, target in enumerate(targets):
        adapter_fp = None
        inputs = {"questions": questions_file(config.questions)}
        if target.adapter is not None:
            adapter_fp = check_adapter(Path(target.adapter), loaded)
            inputs["adapter_weights"] = next(Path(target.adapter) / name for name in WEIGHT_FILES
                                             if (Path(target.adapter) / name).is_file())
        scope = {
            "model": loaded.fingerprint,
            "adapter": adapter_fp,
            **numerics,
            "prompts": settings.fingerprint(),
            "decoding": dataclasses.asdict(decoding),
            "sample_seed": config.sample_seed,
            "backend": config.backend,
        }
        resolved = dataclasses.replace(config, model=loaded.spec, adapter=target.adapter, out=Path(target.out),
                                       chat=chat)
        run = open_run(target.out, "label", resolved, inputs, overwrite=config.overwrite,
                       extra_key={"model_fingerprint": loaded.fingerprint, "adapter_fingerprint": adapter_fp,
                                  **numerics, "exemplar_pool": pool_fingerprint(),
                                  "prompt_format": FORMAT_VERSION})
        if run.complete:
            continue
        run.note(model=loaded.spec, adapter=run.stored(target.adapter) if target.adapter else None)
        store = ResponseStore(Path(config.store) if config.store else Path(target.out) / "store", scope,
                              chunk_rows=config.chunk_rows)
        alone = target.adapter is not None and not shares_a_pass(Path(target.adapter))
        name = f"knowpack_{index}" if target.adapter and not alone else None
        pending.append(_Pending(run, store, name, target.adapter, alone))

    if pending:
        for group in _passes(pending):
            expected = _generate(loaded, config, prompts, questions, decoding, group)
        for item in pending:
            _write_outputs(item, loaded.tokenizer, questions, expected, config.n_prompts, decoding.n_samples)
    return [LabelFolder(t.out) for t in targets]


# ---------------------------------------------------------------- questions and adapters


def check_adapter(folder: Path, loaded: LoadedModel) -> str:
    """Refuse an adapter that would not be loaded as trained: one trained on another model, weights for modules
    the base model lacks or with other shapes, weights for modules its ``adapter_config.json`` does not target
    (peft would silently skip them), targeted modules without weights, an unreadable file. Return its fingerprint
    (sha256 of its weights and its config, which holds the scaling). A full fine-tune's epoch folder is checked by
    ``train/methods/full.py``."""
    from safetensors import SafetensorError, safe_open

    run_folder = folder.parent.parent  # a training run's epochs/epoch_NN/ folder
    if (run_folder / MANIFEST).is_file():
        trained_on = read_manifest(run_folder).get("extra_key", {}).get("model")
        if trained_on and trained_on != loaded.fingerprint:
            raise InputError(f"{folder}: trained on model {trained_on}, but the loaded model is {loaded.fingerprint}")
    if is_full_weights(folder):
        return check_weights(folder, loaded.model)
    weights = folder / "adapter_model.safetensors"
    config_path = folder / "adapter_config.json"
    pickled = [p.name for p in (folder / "adapter_model.bin", folder / "adapter_model.pt") if p.is_file()]
    if pickled and not weights.is_file():
        raise InputError(f"{folder}: {pickled[0]} is a pickle, which can run code when loaded; knowpack loads "
                         "adapters only as adapter_model.safetensors")
    if not weights.is_file() or not config_path.is_file():
        raise InputError(f"{folder}: not a LoRA adapter folder (needs adapter_model.safetensors and adapter_config.json)")
    try:
        adapter_config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{config_path}: not valid JSON ({err})") from err
    if adapter_config.get("peft_type", "LORA") != "LORA":
        raise InputError(f"{folder}: a {adapter_config.get('peft_type')} adapter; only LoRA adapters are supported")
    base = loaded.model.get_base_model() if hasattr(loaded.model, "get_base_model") else loaded.model
    modules = dict(base.named_modules())
    with_weights: set[str] = set()
    try:
        with safe_open(str(weights), framework="pt") as handle:
            for name in handle.keys():
                if ".lora_A." not in name and ".lora_B." not in name:
                    continue
                module_name = name.split(".lora_")[0].removeprefix("base_model.model.")
                module = modules.get(module_name)
                if module is None:
                    raise InputError(f"{folder}: trained on another base model ({module_name} is not a module of "
                                     f"{loaded.spec})")
                shape = handle.get_slice(name).get_shape()
                in_features = getattr(module, "in_features", None)
                out_features = getattr(module, "out_features", None)
                fits = shape[1] == in_features if ".lora_A." in name else shape[0] == out_features
                if not fits:
                    raise InputError(
                        f"{folder}: trained on another base model ({name} has shape {list(shape)}, "
                        f"{module_name} is {in_features}→{out_features} in {loaded.spec})"
                    )
                with_weights.add(module_name)
    except SafetensorError as err:
        raise InputError(f"{weights}: not a readable safetensors file ({str(err).splitlines()[0][:200]}); the "
                         "adapter is damaged or truncated") from err
    targets = adapter_config.get("target_modules")
    if targets != "all-linear":
        targeted = {name for name, module in modules.items()
                    if hasattr(module, "in_features") and names_target(name, targets)}
        ignored = sorted(with_weights - targeted)
        if ignored:
            raise InputError(f"{folder}: its weights are for {ignored[0]}, which its adapter_config.json does not "
                             f"target ({targets}); peft would not load them")
        missing = sorted(targeted - with_weights)
        if missing:
            raise InputError(f"{folder}: adapter_config.json targets {missing[0]}, but the weights hold no LoRA "
                             "tensors for it")
    digest = hashlib.sha256(sha256_file(weights).encode() + b"|" + sha256_file(config_path).encode())
    return digest.hexdigest()


@contextmanager
def attached_adapters(model, adapters: dict[str, Path]) -> Iterator:
    """The model with ``adapters`` (name → folder) loaded as peft adapters; the model is restored afterwards."""
    if not adapters:
        yield model
        return
    from peft import PeftModel

    names = list(adapters)
    if isinstance(model, PeftModel):
        for name in names:
            model.load_adapter(str(adapters[name]), adapter_name=name, is_trainable=False)
        try:
            yield model
        finally:
            for name in names:
                model.delete_adapter(name)
        return
    peft_model = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0], is_trainable=False)
    try:
        for name in names[1:]:
            peft_model.load_adapter(str(adapters[name]), adapter_name=name, is_trainable=False)
        peft_model.eval()
        yield peft_model
    finally:
        peft_model.unload()


@contextmanager
def adapter_engine(loaded: LoadedModel, config: LabelConfig, decoding: Decoding, group: list[_Pending]):
    """The configured backend over the model one pass generates with (``_passes``): the base model with the
    pass's plain LoRA adapters stacked (``probe.adapters``, at the base model's speed) or any other kind through
    peft; for a target that cannot share a pass, its adapter merged into the weights or its full weights swapped
    in."""
    from knowpack.probe.adapters import StackedAdapters, supports

    make = BACKENDS[config.backend].make
    batch_size = config.batch_size or auto_batch_size(loaded, decoding, config.progress)
    if group[0].alone:
        folder = Path(group[0].adapter)
        applied = swapped_in(loaded.model, folder) if is_full_weights(folder) else merged_in(loaded.model, folder)
        with applied as model:
            yield make(model, loaded.tokenizer, decoding, batch_size)
        return
    adapters = {item.adapter_name: Path(item.adapter) for item in group if item.adapter_name}
    if adapters and all(supports(folder) for folder in adapters.values()):
        with StackedAdapters(loaded.model, adapters).attached() as stacked:
            yield make(loaded.model, loaded.tokenizer, decoding, batch_size, router=stacked)
        return
    with attached_adapters(loaded.model, adapters) as model:
        yield make(model, loaded.tokenizer, decoding, batch_size)

CPU_BATCH = 64
GPU_BATCH_LIMIT = 4096  # sequences: on an H200 4096 beat 8192 (SmolLM2-135M) and 1024/2048 (8B shape)
GPU_MEMORY_SHARE = 0.4  # of the free memory, for the batch's keys/values (prefill and logits take the rest)
ROW_SLOTS = 128  # key slots a generated row holds: its question (≤ ~64 tokens) and answer (≤ 32) and alignment


def auto_batch_size(loaded: LoadedModel, decoding: Decoding, announce: bool = True) -> int:
    """Generated sequences per batch: 64 on a CPU (larger batches gain nothing there); on a GPU as many rows as
    ``GPU_MEMORY_SHARE`` of the free memory holds keys and values for (layers × 2 × kv heads × head size ×
    ``ROW_SLOTS`` × bytes), rounded down to a power of two within [64, GPU_BATCH_LIMIT]. Printed, since it
    decides the speed: ``--batch-size`` overrides it."""
    import torch

    if loaded.device.type != "cuda":
        return CPU_BATCH
    config = loaded.model.config.get_text_config()
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = next(loaded.model.parameters()).element_size()
    per_row = config.num_hidden_layers * 2 * heads * head_dim * ROW_SLOTS * element
    free, _ = torch.cuda.mem_get_info(loaded.device)
    rows = max(CPU_BATCH, min(GPU_BATCH_LIMIT, int(GPU_MEMORY_SHARE * free // per_row)))
    size = 1 << (rows.bit_length() - 1)
    if announce:
        print(f"label: batch of {size} sequences (from {free / 2**30:.0f} GiB free; --batch-size to choose)",
              file=sys.stderr, flush=True)
    return size


# ---------------------------------------------------------------- generation


@dataclass
class _Pending:
    run: object
    store: ResponseStore
    adapter_name: str | None  # the peft adapter's name in a shared pass (None: the base model, or a pass alone)
    adapter: Path | None
    alone: bool = False


def _passes(pending: list[_Pending]) -> list[list[_Pending]]:
    """Targets answered in one pass: the base model and the LoRA adapters together (mixed within batches), each
    target that cannot be mixed on its own."""
    shared = [item for item in pending if not item.alone]
    return ([shared] if shared else []) + [[item] for item in pending if item.alone]


def shares_a_pass(folder: Path) -> bool:
    """Whether an adapter can be mixed with others in one batch: peft cannot mix DoRA adapters (no
    ``adapter_names`` with DoRA), and a full fine-tune replaces the weights themselves."""
    if is_full_weights(folder):
        return False
    return not json.loads((folder / "adapter_config.json").read_text()).get("use_dora", False)


@contextmanager
def merged_in(model, folder: Path) -> Iterator:
    """The model with the adapter of ``folder`` merged into its weights (so nothing names adapters), and the
    weights it changed put back, bit for bit, on exit."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    wrapped = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    bases = [layer.get_base_layer() for layer in wrapped.modules() if isinstance(layer, LoraLayer)]
    originals = [(base, base.weight.data.clone()) for base in bases]
    try:
        merged = wrapped.merge_and_unload()
        merged.eval()
        yield merged
    finally:
        if getattr(model, "peft_config", None):  # merging failed: the adapter is still attached
            wrapped.unload()
        for base, weight in originals:
            base.weight.data = weight


def _job_seed(sample_seed: int, question_id: str, prompt_id: int) -> int:
    digest = hashlib.sha256(f"{sample_seed}|{question_id}|{prompt_id}".encode()).hexdigest()
    return int(digest[:15], 16)


def _generate(loaded: LoadedModel, config: LabelConfig, prompts: PromptSet, questions: Questions,
              decoding: Decoding, pending: list[_Pending]) -> np.ndarray:
    """Generate every missing answer into the stores; return the expected prompt hashes (rows × prompts).

    A run that resumes first hashes every prompt to find what is done; a fresh one (empty stores, as every relabel
    after training) skips that pass and hashes each prompt as it is encoded."""
    n_rows = len(questions.ids)
    expected = np.empty((n_rows, config.n_prompts), dtype=object)
    done = [item.store.done_keys() for item in pending]
    fresh = not any(done)
    todo = n_rows * config.n_prompts * len(pending) if fresh else 0
    for prompt_id in range(0 if fresh else config.n_prompts):
        for start in range(0, n_rows, ENCODE_ROWS):
            rows = range(start, min(start + ENCODE_ROWS, n_rows))
            for row, sha in zip(rows, prompts.shas(prompt_id, rows)):
                expected[row, prompt_id] = sha
                key = item_key(questions.ids[row], prompt_id, sha)
                todo += sum(key not in d for d in done)
    if not todo:
        return expected

    order = list(range(n_rows))
    if questions.relations is not None:  # same-relation prompts: keep a relation's shared prefixes together
        order.sort(key=lambda r: questions.relations[r])
    chunks = [(prompt_id, order[start:start + ENCODE_ROWS])
              for prompt_id in range(config.n_prompts) for start in range(0, n_rows, ENCODE_ROWS)]

    def prepare(prompt_id: int, chunk: list[int]) -> tuple[list[Job], list[tuple[int, str, str]]]:
        """The jobs of a chunk's missing answers, and whose each one is (target, question id, prompt hash)."""
        missing = chunk if fresh else [
            row for row in chunk
            if any(item_key(questions.ids[row], prompt_id, expected[row, prompt_id]) not in d for d in done)
        ]
        jobs, owners = [], []
        for encoded in encoder.encode(prompt_id, missing) if missing else ():
            expected[encoded.row, prompt_id] = encoded.prompt_sha
            qid = questions.ids[encoded.row]
            key = item_key(qid, prompt_id, encoded.prompt_sha)
            seed = _job_seed(config.sample_seed, qid, prompt_id)
            for target, item in enumerate(pending):
                if key not in done[target]:
                    jobs.append(Job(encoded.prefix, encoded.suffix, item.adapter_name, seed))
                    owners.append((target, qid, encoded.prompt_sha))
        return jobs, owners

    # The next chunk is rendered and tokenised on a thread while the model answers this one (the tokenizer
    # releases the interpreter, the GPU waits less); that thread has its own copy of the tokenizer.
    encoder = copy.copy(prompts)
    encoder.tokenizer = copy.deepcopy(prompts.tokenizer)
    tokenizer = loaded.tokenizer
    bar = tqdm(total=todo, unit="prompt", desc="label", disable=not config.progress, dynamic_ncols=True)
    try:
        with adapter_engine(loaded, config, decoding, pending) as engine, ThreadPoolExecutor(1) as ahead:
            upcoming = ahead.submit(prepare, *chunks[0])
            for index, (prompt_id, _) in enumerate(chunks):
                jobs, owners = upcoming.result()
                if index + 1 < len(chunks):
                    upcoming = ahead.submit(prepare, *chunks[index + 1])
                for indices, generations in engine.generate(jobs):
                    texts = iter(tokenizer.batch_decode([g.tokens for gens in generations for g in gens],
                                                        skip_special_tokens=True))  # one call a batch
                    for job_index, gens in zip(indices, generations):
                        target, qid, sha = owners[job_index]
                        pending[target].store.add(
                            qid, prompt_id, sha, [(next(texts), len(g.tokens), g.stopped) for g in gens])
                    bar.update(len(indices))
    finally:
        bar.close()
        for item in pending:
            item.store.flush()
    return expected


# ---------------------------------------------------------------- outputs


def _category(greedy_right: np.ndarray, sample_right: np.ndarray) -> list[str]:
    """SliCK category per question from greedy hits (rows × prompts) and sample hit counts (rows)."""
    out = []
    for greedy, samples in zip(greedy_right, sample_right):
        if greedy.all():
            out.append("HighlyKnown")
        elif greedy.any():
            out.append("MaybeKnown")
        elif samples > 0:
            out.append("WeaklyKnown")
        else:
            out.append("Unknown")
    return out


class _FixedRowGroupWriter:
    """A Parquet writer whose row groups do not depend on how the rows were handed to it."""

    def __init__(self, path: Path, schema: pa.Schema, rows_per_group: int):
        self._writer = pq.ParquetWriter(path, schema)
        self._rows_per_group = rows_per_group
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write_table(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self._rows_per_group:
            merged = pa.concat_tables(self._pending)
            full = merged.num_rows - merged.num_rows % self._rows_per_group
            self._writer.write_table(merged.slice(0, full), row_group_size=self._rows_per_group)
            self._pending = [merged.slice(full)]
            self._pending_rows = merged.num_rows - full

    def __enter__(self) -> "_FixedRowGroupWriter":
        return self

    def __exit__(self, *exc) -> None:
        if self._pending_rows and exc[0] is None:
            self._writer.write_table(pa.concat_tables(self._pending))
        self._writer.close()


def _write_outputs(item: _Pending, tokenizer, questions: Questions, expected: np.ndarray, n_prompts: int,
                   n_samples: int) -> None:
    """Stream the store into ``responses.parquet`` (matching each answer) and aggregate ``labels.parquet``."""
    n_rows = len(questions.ids)
    row_of = {qid: row for row, qid in enumerate(questions.ids)}
    owner = np.full((n_rows, n_prompts), -1, dtype=np.int64)
    greedy = {mode: np.zeros((n_rows, n_prompts), dtype=bool) for mode in ("lenient", "strict")}
    sampled = {mode: np.zeros(n_rows, dtype=np.int64) for mode in ("lenient", "strict")}
    counts = np.zeros((n_rows, n_prompts), dtype=np.int64)
    alias_keys: dict[int, list[str]] = {}  # each question's normalised aliases, made once for all its answers
    run = item.run
    with atomic_path(run.file(RESPONSES_FILE)) as tmp:
        with _FixedRowGroupWriter(tmp, RESPONSES_SCHEMA, RESPONSES_ROW_GROUP) as writer:
            for chunk_index, table in enumerate(item.store.iter_tables()):
                cols = table.to_pydict()
                out = {name: [] for name in RESPONSES_SCHEMA.names}
                for qid, pid, sample, sha, text in zip(cols["question_id"], cols["prompt_id"], cols["sample_id"],
                                                       cols["prompt_sha"], cols["generated"]):
                    row = row_of.get(qid)
                    if row is None or pid >= n_prompts or expected[row, pid] != sha:
                        continue  # another question set's answer in a shared store
                    if owner[row, pid] not in (-1, chunk_index):
                        continue  # a duplicate written by a concurrent run: the first chunk wins
                    owner[row, pid] = chunk_index
                    counts[row, pid] += 1
                    answer = extract_answer(text)
                    if row not in alias_keys:
                        alias_keys[row] = normalized_aliases(questions.aliases[row])
                    answer_key = normalize(answer)
                    lenient = lenient_key_match(answer_key, alias_keys[row])
                    strict = strict_key_match(answer_key, alias_keys[row])
                    if sample == 0:
                        greedy["lenient"][row, pid] = lenient
                        greedy["strict"][row, pid] = strict
                    else:
                        sampled["lenient"][row] += lenient
                        sampled["strict"][row] += strict
                    for name, value in zip(RESPONSES_SCHEMA.names, (qid, pid, sample, answer, lenient, strict)):
                        out[name].append(value)
                writer.write_table(pa.Table.from_pydict(out, schema=RESPONSES_SCHEMA))
    incomplete = np.argwhere(counts != 1 + n_samples)
    if len(incomplete):
        row, pid = incomplete[0]
        raise InputError(
            f"{item.store.dir}: question {questions.ids[row]!r} prompt {pid} has {counts[row, pid]} of "
            f"{1 + n_samples} answers; the store is damaged, delete it to regenerate"
        )
    total_samples = n_prompts * n_samples
    labels = {
        "question_id": questions.ids,
        "p_greedy": greedy["lenient"].mean(axis=1),
        "p_sample": sampled["lenient"] / total_samples if total_samples else np.full(n_rows, math.nan),
        "p_greedy_strict": greedy["strict"].mean(axis=1),
        "p_sample_strict": sampled["strict"] / total_samples if total_samples else np.full(n_rows, math.nan),
        "category": _category(greedy["lenient"], sampled["lenient"]),
        "category_strict": _category(greedy["strict"], sampled["strict"]),
    }
    write_parquet(run.file(LABELS_FILE), pa.Table.from_pydict(labels, schema=LABELS_SCHEMA))
    counts_by_category = {c: labels["category"].count(c) for c in CATEGORIES}
    run.finish([RESPONSES_FILE, LABELS_FILE], categories=counts_by_category, store=run.stored(item.store.dir))
