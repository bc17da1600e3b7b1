"""The prefix-sharing engine must produce exactly what plain `model.generate` produces."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from knowpack.probe import engine as engine_module
from knowpack.probe.backends import Decoding, Job
from knowpack.probe.engine import PrefixEngine, sample_uniforms
from knowpack.probe.label import attached_adapters
from knowpack.probe.reference import GenerateEngine
from knowpack.probe.prompts import PromptSet, PromptSettings

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTIONS = [
    "What is the capital of France?",
    "Who wrote the novel War and Peace?",
    "Which river flows through the city of Vienna, the capital of Austria?",
    "Who painted The Starry Night?",
    "Which country has the largest population in Africa?",
]


@pytest.fixture(scope="module")
def tiny(lively_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(lively_model_dir)
    model = AutoModelForCausalLM.from_pretrained(lively_model_dir, dtype=torch.float32).eval()
    return model, tokenizer


def make_jobs(tokenizer, chat: bool, n_prompts: int = 2, adapter=None) -> list[Job]:
    prompts = PromptSet(tokenizer, PromptSettings(n_prompts=n_prompts, chat=chat), QUESTIONS)
    return [Job(e.prefix, e.suffix, adapter, seed=i) for p in range(n_prompts)
            for i, e in enumerate(prompts.encode(p, range(len(QUESTIONS))))]


def reference(model, tokenizer, job: Job, max_new_tokens: int) -> list[int]:
    """The generate backend's greedy answer: plain ``model.generate`` on the whole prompt."""
    return list(GenerateEngine(model, tokenizer, Decoding(max_new_tokens=max_new_tokens)).answer(job)[0].tokens)


def run(engine: PrefixEngine, jobs: list[Job]):
    results = {}
    for indices, generations in engine.generate(jobs):
        results.update(zip(indices, generations))
    return [results[i] for i in range(len(jobs))]


def assert_matches_generate(model, tokenizer, engine, jobs, max_new_tokens):
    for job, gens in zip(jobs, run(engine, jobs)):
        greedy = gens[0]
        ref = reference(model, tokenizer, job, max_new_tokens)
        assert list(greedy.tokens) == ref[: len(greedy.tokens)]
        if greedy.stopped:
            assert engine.stop.is_eos[greedy.tokens[-1]] or engine.stop.has_newline[greedy.tokens[-1]]
        else:
            assert len(greedy.tokens) == max_new_tokens


# graphs: the GPU's decode steps over fixed shapes (every key slot, the write slot read from the device), on the CPU
GRAPHS = pytest.mark.parametrize("graphs", [False, True], ids=["steps", "fixed-steps"])


@pytest.mark.parametrize("key_alignment", [1, 16])  # 16: the GPU's masked alignment slots, run on the CPU
@pytest.mark.parametrize("chat", [True, False])
@GRAPHS
def test_greedy_equals_generate_on_tiny_model(tiny, chat, key_alignment, graphs, monkeypatch):
    monkeypatch.setattr(engine_module, "CPU_KEY_ALIGNMENT", key_alignment)
    model, tokenizer = tiny
    jobs = make_jobs(tokenizer, chat)
    engine = PrefixEngine(model, tokenizer, Decoding(max_new_tokens=8), batch_size=4, graphs=graphs)
    assert_matches_generate(model, tokenizer, engine, jobs, 8)


@pytest.mark.parametrize("check_every", [1, 3])
@GRAPHS  # with graphs finished rows are dropped once half of the rows are done
def test_rows_stop_at_the_end_of_their_answer(tiny, monkeypatch, check_every, graphs):
    model, tokenizer = tiny
    # a stop rule where every token containing "e" counts as end of sequence: rows stop at different steps
    jobs = make_jobs(tokenizer, chat=True, n_prompts=5)
    free = PrefixEngine(model, tokenizer, Decoding(max_new_tokens=12, stop_at_newline=False), batch_size=16)
    free.stop.is_eos[:] = False
    answers = [g[0].tokens for g in run(free, jobs)]
    # declare as end-of-sequence a token that rows reach at different steps (or never)
    stop_token = next(t for t in {t for a in answers for t in a}
                      if len({a.index(t) if t in a else -1 for a in answers}) > 2)
    engine = PrefixEngine(model, tokenizer, Decoding(max_new_tokens=12, stop_at_newline=False), batch_size=16,
                          graphs=graphs)
    engine.stop.is_eos[:] = False
    engine.stop.is_eos[stop_token] = True
    engine.check_every = check_every  # drop finished rows every step (CPU) or every few steps (GPU)
    engine.prefill_tokens = 40  # several prefill slices per batch
    generations = run(engine, jobs)
    assert len({len(g[0].tokens) for g in generations}) > 2  # finished rows left, the others went on
    for answer, gens in zip(answers, generations):
        cut = answer.index(stop_token) + 1 if stop_token in answer else 12
        assert gens[0].tokens == answer[:cut] and gens[0].stopped == (stop_token in answer)


def test_a_step_that_cannot_be_captured_decodes_without_graphs(tiny, monkeypatch, capsys):
    """A model whose forward asks the host for a value cannot be captured: the engine says so in one line and
    decodes the same answers step by step."""
    model, tokenizer = tiny

    def refuse(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing\nmore")

    jobs = make_jobs(tokenizer, chat=True, n_prompts=1)
    expected = run(PrefixEngine(model, tokenizer, Decoding(max_new_tokens=6), batch_size=8, graphs=False), jobs)
    monkeypatch.setattr(engine_module, "_CapturedStep", refuse)
    engine = PrefixEngine(model, tokenizer, Decoding(max_new_tokens=6), batch_size=8, graphs=True)
    assert run(engine, jobs) == expected
    assert not engine.graphs
    assert capsys.readouterr().err.count("decoding without CUDA graphs") == 1


def test_forced_length_never_stops_early(tiny):
    model, tokenizer = tiny
    engine = PrefixEngine(model, tokenizer, Decoding(max_new_tokens=6, min_new_tokens=6), batch_size=8)
    engine.stop.is_eos[:] = True
    assert all(len(g[0].tokens) == 6 for g in run(engine, make_jobs(tokenizer, chat=True, n_prompts=1)))


def test_sampling_is_seeded_per_prompt_not_per_batch(tiny):
    model, tokenizer = tiny
    jobs = make_jobs(tokenizer, chat=True, n_prompts=1)
    decoding = Decoding(max_new_tokens=5, n_samples=3, temperature=1.0)
    big = run(PrefixEngine(model, tokenizer, decoding, batch_size=64), jobs)
    fixed = run(PrefixEngine(model, tokenizer, decoding, batch_size=64, graphs=True), jobs)
    assert [[g.tokens for g in gens] for gens in fixed] == [[g.tokens for g in gens] for gens in big]
    small = run(PrefixEngine(model, tokenizer, decoding, batch_size=4), jobs[::-1])[::-1]
    assert [[g.tokens for g in gens] for gens in big] == [[g.tokens for g in gens] for gens in small]
    assert all(len(gens) == 4 for gens in big)
    assert len({gens[1].tokens for gens in big} | {gens[2].tokens for gens in big}) > 1
    reseeded = [Job(j.prefix, j.suffix, None, j.seed + 100) for j in jobs]
    other = run(PrefixEngine(model, tokenizer, decoding, batch_size=64), reseeded)
    assert [g[1].tokens for g in other] != [g[1].tokens for g in big]
    greedy = run(PrefixEngine(model, tokenizer, Decoding(max_new_tokens=5), batch_size=64), jobs)
    assert [g[0].tokens for g in greedy] == [g[0].tokens for g in big]


def test_uniforms_are_a_function_of_seed_sample_and_step():
    a = sample_uniforms([1, 2, 1], [0, 0, 1], 5)
    assert a.shape == (3, 5) and ((a >= 0) & (a < 1)).all()
    assert (sample_uniforms([2], [0], 5) == a[1]).all()
    assert len({tuple(row) for row in a}) == 3


def test_several_adapters_in_one_batch(tiny, lively_model_dir, tmp_path):
    model, tokenizer = tiny
    folders = {}
    for name in ("one", "two"):
        base = AutoModelForCausalLM.from_pretrained(lively_model_dir, dtype=torch.float32)
        torch.manual_seed(len(name) + ord(name[0]))
        config = LoraConfig(r=4, lora_alpha=16, target_modules=["gate_proj", "up_proj", "down_proj"],
                            init_lora_weights=False)
        get_peft_model(base, config).save_pretrained(tmp_path / name)
        folders[name] = tmp_path / name
    base_jobs = make_jobs(tokenizer, chat=True, n_prompts=1)
    jobs = [Job(j.prefix, j.suffix, adapter, j.seed) for adapter in (None, "one", "two") for j in base_jobs]
    with attached_adapters(model, folders) as peft_model:
        engine = PrefixEngine(peft_model, tokenizer, Decoding(max_new_tokens=8), batch_size=64)
        generations = run(engine, jobs)
    assert not isinstance(model, PeftModel) and not any("lora" in n for n, _ in model.named_modules())
    by_adapter = {}
    for job, gens in zip(jobs, generations):
        by_adapter.setdefault(job.adapter, []).append(gens[0].tokens)
    assert by_adapter[None] != by_adapter["one"] != by_adapter["two"]
    for name in (None, "one", "two"):
        reference_model = model if name is None else PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(lively_model_dir, dtype=torch.float32), folders[name]).eval()
        for job, tokens in zip(base_jobs, by_adapter[name]):
            job = Job(job.prefix, job.suffix, "default" if name else None, job.seed)  # peft's name for a loaded adapter
            assert list(tokens) == reference(reference_model, tokenizer, job, 8)[: len(tokens)]


@pytest.mark.slow
def test_greedy_equals_generate_on_embedded_model(embedded_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32).eval()
    jobs = make_jobs(tokenizer, chat=True, n_prompts=1)
    engine = PrefixEngine(model, tokenizer, Decoding(max_new_tokens=10), batch_size=8)
    generations = run(engine, jobs)
    assert sum(g[0].stopped for g in generations) >= len(jobs) // 2  # real answers end at <|im_end|>
    assert_matches_generate(model, tokenizer, engine, jobs, 10)


# a GPU's paths, on the CPU: every adapter behind a row mask; and the prefixes' attention in grouped matmuls
GPU_PATHS = pytest.mark.parametrize("masked, grouped", [(False, False), (True, False), (True, True)],
                                    ids=["by-group", "masked", "masked-grouped"])


def use_grouped_matmuls(monkeypatch) -> None:
    monkeypatch.setattr(engine_module, "_grouped_matmuls", lambda like: True)
    monkeypatch.setattr(engine_module, "GROUPED_MM_DTYPES", {torch.float32, torch.bfloat16})
    monkeypatch.setattr(engine_module, "CPU_KEY_ALIGNMENT", engine_module.GPU_KEY_ALIGNMENT)


@GPU_PATHS
@GRAPHS
def test_stacked_adapters_equal_peft(tiny, lively_model_dir, tmp_path, masked, grouped, graphs, monkeypatch):
    """probe.adapters serves several plain LoRA adapters in one batch with peft's numbers: the same logits as
    peft's mixed batch, and greedy answers equal to plain generate on each PeftModel — whether each row group runs
    its own adapter or every adapter runs on every row behind a mask, and whether each adapter's prefix is read
    by its own matmuls or by one grouped matmul."""
    from knowpack.probe import adapters as adapters_module
    from knowpack.probe.adapters import StackedAdapters, supports

    monkeypatch.setattr(adapters_module, "MASKED_DEVICES", {"cpu"} if masked else set())
    if grouped:
        use_grouped_matmuls(monkeypatch)
    model, tokenizer = tiny
    folders = {}
    for name, (rank, alpha, rslora) in {"one": (4, 16, False), "two": (2, 3, True)}.items():
        base = AutoModelForCausalLM.from_pretrained(lively_model_dir, dtype=torch.float32)
        torch.manual_seed(rank)
        get_peft_model(base, LoraConfig(r=rank, lora_alpha=alpha, use_rslora=rslora, init_lora_weights=False,
                                        target_modules=["gate_proj", "down_proj"] if name == "one" else ["q_proj"]),
                       ).save_pretrained(tmp_path / name)
        folders[name] = tmp_path / name
    assert all(supports(f) for f in folders.values())
    ids = torch.tensor([[1, 5, 9, 13, 2, 7]] * 5)
    names = [None, "one", "one", "two", None]
    with attached_adapters(model, folders) as peft_model, torch.inference_mode():
        expected = peft_model(ids, adapter_names=[n or "__base__" for n in names]).logits
    with StackedAdapters(model, folders).attached() as stacked, torch.inference_mode():
        with stacked.route(names):
            got = model(ids).logits
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5)  # float32 rounding: the scale is folded into B
    with torch.inference_mode():
        assert torch.equal(model(ids).logits[0], got[0]), "rows without an adapter, and the model after, are the base"

    base_jobs = make_jobs(tokenizer, chat=True, n_prompts=1)
    jobs = [Job(j.prefix, j.suffix, adapter, j.seed) for adapter in (None, "one", "two") for j in base_jobs]
    with StackedAdapters(model, folders).attached() as stacked:
        generations = run(PrefixEngine(model, tokenizer, Decoding(max_new_tokens=8), batch_size=64, router=stacked,
                                       graphs=graphs), jobs)
    for name in ("one", "two"):
        reference_model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(lively_model_dir, dtype=torch.float32), folders[name]).eval()
        for job, gens in zip(jobs, generations):
            if job.adapter == name:
                tokens = gens[0].tokens
                job = Job(job.prefix, job.suffix, "default", job.seed)
                assert list(tokens) == reference(reference_model, tokenizer, job, 8)[: len(tokens)]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU"))])
def test_grouped_prefix_matmuls_equal_one_matmul_per_group(device, monkeypatch):
    """Rows of three prefix groups, the middle one without rows (its rows all finished): one grouped matmul
    gives each row its own prefix's product, as a matmul per group does."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    generator = torch.Generator().manual_seed(0)
    heads, rows, per_row, k, n = 3, 7, 4, 16, 32
    x = torch.randn(heads, rows * per_row, k, generator=generator).to(device, dtype)
    matrices = torch.randn(heads, 3, n, k, generator=generator).to(device, dtype).transpose(-1, -2)
    keys = torch.zeros(heads, 3, n, k, device=device, dtype=dtype)
    groups = [(0, 4, 0), (4, 7, 2)]

    def state():
        return engine_module._BatchState(torch.zeros(rows, dtype=torch.long, device=device), 8, n, {0: (keys, keys)},
                                         groups)

    monkeypatch.setattr(engine_module, "_grouped_matmuls", lambda like: False)
    looped = engine_module._matmul_by_group(x, matrices, state(), per_row)
    use_grouped_matmuls(monkeypatch)
    grouped_state = state()
    grouped_state.begin(1, 1)
    assert grouped_state.group_ends.tolist() == [4, 4, 7]
    grouped = engine_module._matmul_by_group(x, matrices, grouped_state, per_row)
    expected = torch.cat([x[:, :4 * per_row] @ matrices[:, 0], x[:, 4 * per_row:] @ matrices[:, 2]], dim=1)
    tolerance = dict(atol=0.05, rtol=0.02) if dtype == torch.bfloat16 else dict(atol=1e-5, rtol=1e-5)
    assert torch.allclose(looped.float(), expected.float(), **tolerance)
    assert torch.allclose(grouped.float(), expected.float(), **tolerance)


@pytest.mark.slow
def test_stacked_adapters_equal_peft_generate_on_the_embedded_model(embedded_model_dir, tmp_path):
    """On the real SmolLM2-135M: greedy answers with two LoRA adapters in one batch (stacked) equal plain
    ``generate`` on each PeftModel."""
    from knowpack.probe.adapters import StackedAdapters

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    folders = {}
    for name, (rank, targets) in {"mlp": (8, ["gate_proj", "up_proj", "down_proj"]), "attn": (2, ["q_proj", "v_proj"])}.items():
        base = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
        torch.manual_seed(rank)
        peft_model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets,
                                                     init_lora_weights=False))
        with torch.no_grad():  # large enough to change answers, small enough to keep them words
            for parameter_name, parameter in peft_model.named_parameters():
                if "lora_B" in parameter_name:
                    parameter.mul_(0.5)
        peft_model.save_pretrained(tmp_path / name)
        folders[name] = tmp_path / name
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32).eval()
    base_jobs = make_jobs(tokenizer, chat=True, n_prompts=1)
    jobs = [Job(j.prefix, j.suffix, adapter, j.seed) for adapter in (None, "mlp", "attn") for j in base_jobs]
    with StackedAdapters(model, folders).attached() as stacked:
        generations = run(PrefixEngine(model, tokenizer, Decoding(max_new_tokens=12), batch_size=64, router=stacked),
                          jobs)
    answers = {}
    for name in ("mlp", "attn"):
        reference_model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32), folders[name]).eval()
        for job, gens in zip(jobs, generations):
            if job.adapter == name:
                tokens = list(gens[0].tokens)
                assert tokens == reference(reference_model, tokenizer, Job(job.prefix, job.suffix, "default", job.seed),
                                           12)[: len(tokens)]
                answers.setdefault(name, []).append(tokens)
    base_answers = [list(g[0].tokens) for job, g in zip(jobs, generations) if job.adapter is None]
    assert answers["mlp"] != base_answers or answers["attn"] != base_answers, "the adapters change some answer"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_captured_decode_steps_equal_generate_on_a_gpu(lively_model_dir, tmp_path):
    """On a GPU each decode step is a replayed CUDA graph: greedy answers still equal plain ``generate`` (with
    rows stopping at different steps, so that graphs are captured again on fewer rows), samples equal the
    uncaptured steps', and so do answers under stacked adapters."""
    from knowpack.probe.adapters import StackedAdapters

    tokenizer = AutoTokenizer.from_pretrained(lively_model_dir)
    model = AutoModelForCausalLM.from_pretrained(lively_model_dir, dtype=torch.float32).eval().to("cuda")
    jobs = make_jobs(tokenizer, chat=True, n_prompts=3)
    engine = PrefixEngine(model, tokenizer, Decoding(max_new_tokens=12), batch_size=16)
    assert engine.graphs
    assert_matches_generate(model, tokenizer, engine, jobs, 12)
    decoding = Decoding(max_new_tokens=6, n_samples=3, temperature=1.0)
    tokens = [[[g.tokens for g in gens] for gens in run(PrefixEngine(model, tokenizer, decoding, batch_size=64,
                                                                     graphs=graphs), jobs)]
              for graphs in (True, False)]
    assert tokens[0] == tokens[1]

    for seed, name in enumerate(("one", "two")):  # two: a GPU runs them at once behind a mask
        base = AutoModelForCausalLM.from_pretrained(lively_model_dir, dtype=torch.float32)
        torch.manual_seed(seed)
        get_peft_model(base, LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                                        target_modules=["gate_proj", "down_proj"])).save_pretrained(tmp_path / name)
    routed = [Job(j.prefix, j.suffix, adapter, j.seed) for adapter in (None, "one", "two") for j in jobs]
    answers = []
    with StackedAdapters(model, {n: tmp_path / n for n in ("one", "two")}).attached() as stacked:
        for graphs in (True, False):
            engine = PrefixEngine(model, tokenizer, Decoding(max_new_tokens=8), batch_size=64, router=stacked,
                                  graphs=graphs)
            answers.append([g[0].tokens for g in run(engine, routed)])
    assert answers[0] == answers[1]
