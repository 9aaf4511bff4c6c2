"""Context dependence: a deterministic copying LM for the ranking check, a tiny Llama for the maths.

Why a toy LM for the ranking: a random-weight model has no reason to prefer answers found in the
context, and training one to copy takes minutes and may be flaky. ``CopyLM`` is a fixed "induction
head": it predicts the next token from what followed earlier occurrences of the current token in the
same sequence (plus add-alpha smoothing). Such a model assigns a higher likelihood to an answer that
appears in the context than without it, and no gain to an answer absent from the context — exactly
the property context dependence must rank by, independent of any model quality. The tiny Llama
checks the likelihood computation itself against a direct unpadded forward pass and across batch
compositions (left padding with explicit position ids).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import datasets
import pytest
import torch

from hf_context_synthesis.evaluation.context_dependence import (
    answer_log_likelihoods,
    context_dependence_scores,
    default_prompt_fn,
    select_by_context_dependence,
)
from hf_context_synthesis.synthesis.task_templates import render_task_prompt, template_for


class CopyLM(torch.nn.Module):
    """p(next = v | x_<=t) = (count(s < t: x_s = x_t, x_{s+1} = v) + alpha) / (count + alpha * V)."""

    def __init__(self, vocab_size: int, alpha: float = 0.05) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.alpha = alpha
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        batch, length = input_ids.shape
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        same = input_ids[:, :, None] == input_ids[:, None, :]  # [b, t, s]
        earlier = torch.ones(length, length, dtype=torch.bool).tril(-1)  # s < t, so x_{s+1} is in the prefix
        weights = same & earlier & mask[:, None, :] & mask[:, :, None]
        following = torch.nn.functional.one_hot(input_ids[:, 1:], self.vocab_size).float()  # x_{s+1}
        following = torch.cat([following, torch.zeros(batch, 1, self.vocab_size)], dim=1)
        counts = weights.float() @ following
        probs = (counts + self.alpha) / (counts.sum(-1, keepdim=True) + self.alpha * self.vocab_size)
        return SimpleNamespace(logits=probs.log())


@pytest.fixture(scope="module")
def tokenizer():
    from hf_context_synthesis.testing.tiny_model import make_tiny_tokenizer

    return make_tiny_tokenizer(["Johann Keller Maria Lopez Ottavio Brandt harbour lighthouse"])


def composed_row(context: str, instruction: str, answer: str, task: str = "hotpotqa") -> dict:
    """A row in the builder's layout: the task prompt around the documents, the answer as assistant turn."""
    documents = [context, "The weather in the valley was mild that year and the harvest was good."]
    prompt, _ = render_task_prompt(template_for(task), documents, instruction)
    return {
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        "task": task,
        "instruction": instruction,
        "answer": answer,
    }


# Each document starts a line, so an answer found there has the same tokens as the assistant turn
# (byte-level BPE spells a word differently after a space).
ROWS = [
    # answer absent from the context
    composed_row("The old mill stood by the river for two centuries.", "Who built the mill?", "Maria Lopez"),
    # answer present in the context
    composed_row("Johann Keller built the mill in 1820.", "Who built the mill?", "Johann Keller"),
    composed_row("Ottavio Brandt kept the lighthouse and lit the lamp.", "Who kept the lighthouse?", "Ottavio Brandt"),
    composed_row("The harbour was quiet in winter.", "Who kept the lighthouse?", "Ottavio Brandt"),
]


def test_default_prompt_fn_only_removes_the_context() -> None:
    row = ROWS[1]
    with_ctx, without, answer = default_prompt_fn(row)
    assert "\nJohann Keller built" in with_ctx
    assert with_ctx == row["messages"][0]["content"] and answer == "Johann Keller"
    assert "Johann Keller" in with_ctx and "Johann Keller" not in without
    assert without == render_task_prompt(template_for("hotpotqa"), [], "Who built the mill?")[0]
    flat = {"context": "The mill was built by Johann Keller.", "instruction": "Who?", "answer": "Johann Keller"}
    w, wo, a = default_prompt_fn(flat)
    assert "built by Johann Keller" in w and "built by" not in wo and a == "Johann Keller"
    with pytest.raises(ValueError, match="prompt_fn"):
        default_prompt_fn({"text": "no usable columns"})


def test_answers_found_in_context_rank_higher(tokenizer) -> None:
    model = CopyLM(len(tokenizer))
    scores = context_dependence_scores(ROWS, model, tokenizer, batch_size=3)
    assert scores[1] > 0.5 and scores[2] > 0.5  # copying the answer from the context helps a lot
    assert abs(scores[0]) < 0.2 and abs(scores[3]) < 0.2  # nothing to copy: no gain
    assert min(scores[1], scores[2]) > max(scores[0], scores[3])


def test_select_by_context_dependence_keeps_top_fraction_in_order(tokenizer) -> None:
    ds = datasets.Dataset.from_list(ROWS)
    model = CopyLM(len(tokenizer))
    kept = select_by_context_dependence(ds, model, tokenizer, top_fraction=0.5, batch_size=2)
    assert kept["answer"] == ["Johann Keller", "Ottavio Brandt"]
    assert kept["messages"] == [ROWS[1]["messages"], ROWS[2]["messages"]]
    assert all(s > 0.5 for s in kept["context_dependence"])
    everything = select_by_context_dependence(ds, model, tokenizer, top_fraction=1.0, column=None)
    assert len(everything) == 4 and "context_dependence" not in everything.column_names
    one = select_by_context_dependence(ds, model, tokenizer, top_fraction=0.01)
    assert one["answer"] in (["Johann Keller"], ["Ottavio Brandt"])
    with pytest.raises(ValueError, match="top_fraction"):
        select_by_context_dependence(ds, model, tokenizer, top_fraction=0)


@pytest.fixture(scope="module")
def tiny_llama(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_log_likelihood_matches_a_direct_forward_pass(tiny_llama) -> None:
    model, tok = tiny_llama
    prompt, answer = "Question: Who built the mill?", "The miller's family built it."
    (got,) = answer_log_likelihoods(model, tok, [prompt], [answer], reduction="sum")
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    p_ids = tok(text, add_special_tokens=False)["input_ids"]
    a_ids = tok(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + a_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids).logits[0].float(), -1)
    expected = sum(log_probs[len(p_ids) - 1 + j, a].item() for j, a in enumerate(a_ids))
    assert got == pytest.approx(expected, abs=1e-4)
    (mean,) = answer_log_likelihoods(model, tok, [prompt], [answer], reduction="mean")
    assert mean == pytest.approx(expected / len(a_ids), abs=1e-5)


def test_scores_do_not_depend_on_batching(tiny_llama) -> None:
    model, tok = tiny_llama
    prompts = ["short", "a much longer prompt about the mill and the river " * 5, "medium length prompt here"]
    answers = ["yes", "The miller built it in 1820 after the flood.", "no one"]
    one_by_one = answer_log_likelihoods(model, tok, prompts, answers, batch_size=1)
    batched = answer_log_likelihoods(model, tok, prompts, answers, batch_size=3)
    assert batched == pytest.approx(one_by_one, abs=1e-4)
    assert all(math.isfinite(x) and x < 0 for x in batched)
    # an empty answer has no likelihood
    assert math.isnan(answer_log_likelihoods(model, tok, ["p"], [""])[0])


def test_max_length_truncates_the_prompt_not_the_answer(tiny_llama) -> None:
    model, tok = tiny_llama
    long_prompt = "the river and the mill " * 200
    (full,) = answer_log_likelihoods(model, tok, [long_prompt], ["yes"], max_length=64)
    assert math.isfinite(full)
    with pytest.raises(ValueError, match="shorter than an answer"):
        answer_log_likelihoods(model, tok, ["p"], ["one two three four five six"], max_length=3)
