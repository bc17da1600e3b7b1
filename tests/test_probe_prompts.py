"""Prompt format, exemplar policies and the exact prefix/suffix split of the probe."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from knowpack.errors import InputError
from knowpack.probe.prompts import (
    SYSTEM_PROMPT,
    PromptSet,
    PromptSettings,
    encode_prompts,
    exemplar_pool,
    render_prompt,
    training_example,
)

QUESTIONS = [f"What is the capital of country number {i}?" for i in range(7)] + ["Who wrote Hamlet?"]
RELATIONS = ["capital"] * 7 + ["author"]
ANSWERS = [f"City {i}" for i in range(7)] + ["William Shakespeare"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_pool_has_enough_distinct_exemplars():
    pool = exemplar_pool()
    assert len(pool) >= 40
    assert len({e.question for e in pool}) == len(pool)
    assert all(e.question.strip() and e.answer.strip() for e in pool)


def test_chat_prompt_follows_the_study(tokenizer):
    prompts = PromptSet(tokenizer, PromptSettings(n_prompts=10, shots=4, chat=True), QUESTIONS)
    pool = exemplar_pool()
    _, (text,) = prompts.texts(3, [0])
    assert text.index(SYSTEM_PROMPT) < text.index(f"Question: {pool[12].question}")
    for i in range(12, 16):  # prompt set 3 uses exemplars 12..15
        assert f"Question: {pool[i].question}" in text and f"Answer: {pool[i].answer}" in text
    assert pool[11].question not in text and pool[16].question not in text
    assert text.rstrip().endswith("assistant")  # generation prompt after the target question
    assert text.index(f"Question: {QUESTIONS[0]}") > text.index(pool[15].answer)


def test_plain_prompt_is_question_answer_lines(tokenizer):
    pool = exemplar_pool()
    text = render_prompt(tokenizer, pool[:2], "Who wrote Hamlet?", chat=False)
    assert text == (f"{SYSTEM_PROMPT}\n\nQuestion: {pool[0].question}\nAnswer: {pool[0].answer}\n\n"
                    f"Question: {pool[1].question}\nAnswer: {pool[1].answer}\n\nQuestion: Who wrote Hamlet?\nAnswer:")


TRIMMING_TEMPLATE = (  # rewrites what it is given: strips it, and turns newlines into spaces
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] | trim | replace('\\n', ' ') }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
AWKWARD = ["Who wrote Hamlet?", " Who wrote Hamlet? ", "Line one\nline two?", 'Is "A & B" <b>bold</b>?',
           "{{ oops }} {% raw %}?", "Zürich – 東京?", "Tab\there?", ""]


@pytest.mark.parametrize("template", ["model", "trimming", "plain"])
def test_prompt_texts_equal_rendering_each_prompt(tokenizer, template):
    """Prompts are put together from each exemplar set's rendered frame; the texts equal rendering each prompt
    through the template, for awkward questions, and for a template that rewrites what it is given."""
    chat = template != "plain"
    if template == "trimming":
        tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
        tokenizer.chat_template = TRIMMING_TEMPLATE
    prompts = PromptSet(tokenizer, PromptSettings(n_prompts=2, chat=chat), AWKWARD)
    for prompt_id in range(2):
        _, texts = prompts.texts(prompt_id, range(len(AWKWARD)))
        exemplars = prompts.pool_exemplars(prompt_id)
        assert texts == [render_prompt(tokenizer, exemplars, q, chat) for q in AWKWARD]
    assert (prompts._frames[("pool", 0)] is None) == (template == "trimming")


@pytest.mark.parametrize("chat", [True, False])
def test_prefix_plus_suffix_is_the_whole_tokenisation(tokenizer, chat):
    prompts = PromptSet(tokenizer, PromptSettings(n_prompts=3, chat=chat), QUESTIONS)
    for prompt_id in range(3):
        encoded = prompts.encode(prompt_id, range(len(QUESTIONS)))
        _, texts = prompts.texts(prompt_id, range(len(QUESTIONS)))
        for item, ids in zip(encoded, encode_prompts(tokenizer, texts, chat)):
            assert list(item.prefix + item.suffix) == ids
            assert item.suffix and len(item.prefix) > 50  # the few-shot part is shared
        assert len({e.prefix for e in encoded}) == 1


def test_same_relation_exemplars_never_include_the_question(tokenizer):
    settings = PromptSettings(n_prompts=4, shots=4, policy="same-relation", seed=1)
    prompts = PromptSet(tokenizer, settings, QUESTIONS, RELATIONS, ANSWERS)
    for prompt_id in range(4):
        _, texts = prompts.texts(prompt_id, range(len(QUESTIONS)))
        for row, text in enumerate(texts):
            assert text.count(QUESTIONS[row]) == 1  # only as the target
            if RELATIONS[row] == "capital":
                assert sum(f"Question: {q}" in text for q in QUESTIONS[:7]) == 5  # 4 shots + the target
    # "author" has no other question: its shots come from the pool
    _, (text,) = prompts.texts(0, [7])
    assert exemplar_pool()[0].question in text
    again = PromptSet(tokenizer, settings, QUESTIONS, RELATIONS, ANSWERS)
    assert again.texts(2, range(8))[1] == prompts.texts(2, range(8))[1]
    other = PromptSet(tokenizer, PromptSettings(n_prompts=4, policy="same-relation", seed=2), QUESTIONS, RELATIONS,
                      ANSWERS)
    assert any(other.texts(p, range(7))[1] != prompts.texts(p, range(7))[1] for p in range(4))


def test_settings_are_checked():
    with pytest.raises(InputError, match="policy"):
        PromptSettings(policy="random").validate()
    with pytest.raises(InputError, match="pool exemplars"):
        PromptSettings(n_prompts=20, shots=4).validate()
    assert PromptSettings(chat=True).fingerprint() != PromptSettings(chat=False).fingerprint()


def test_training_example_uses_the_probe_format(tokenizer):
    prompt, target = training_example(tokenizer, "Who wrote Hamlet?", "William Shakespeare", chat=True)
    assert SYSTEM_PROMPT in prompt and "Question: Who wrote Hamlet?" in prompt
    assert target.startswith("Answer: William Shakespeare") and tokenizer.eos_token in target
    probe = render_prompt(tokenizer, [], "Who wrote Hamlet?", chat=True)
    assert prompt == probe  # zero-shot probe prompt == training prompt
    prompt, target = training_example(tokenizer, "Who wrote Hamlet?", "William Shakespeare", chat=False)
    assert prompt == render_prompt(tokenizer, [], "Who wrote Hamlet?", chat=False)
    assert target == " William Shakespeare\n"
