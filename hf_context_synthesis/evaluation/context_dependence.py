"""Context dependence of training examples: how much the context helps a model predict the answer.

For one example, ``context_dependence = LL(answer | prompt with context) - LL(answer | prompt
without context)`` where ``LL`` is the answer's log-likelihood under a causal LM (per-token mean by
default, the sum with ``reduction="sum"``). High values mean the answer is hard to guess without the
documents, i.e. the example really needs its context; near-zero or negative values flag answers the
model can produce from the instruction alone. :func:`select_by_context_dependence` keeps the top
fraction of a dataset by this score.

Prompts come from the row, in either layout:

* composed rows (:data:`~hf_context_synthesis.synthesis.schema.ROW_FEATURES`): *with* context is the user turn
  of ``messages``; *without* context is the same task template rendered with no documents
  (:func:`~hf_context_synthesis.synthesis.task_templates.render_task_prompt`), so only the context differs;
  the answer is the assistant turn;
* flat rows with ``context``, ``instruction`` and ``answer`` columns (e.g. instruction-synthesis
  output): both prompts use the task template of ``task`` (or the generic one), with and without
  ``context``.

Pass ``prompt_fn(row) -> (with_context_prompt, without_context_prompt, answer)`` for anything else.
Prompts go through the tokenizer's chat template when it has one (generation prompt added), the
answer's tokens are appended, and only the answer tokens are scored. Sequences longer than
``max_length`` lose the middle of the prompt (the answer is always kept whole). Batches are
left-padded with explicit position ids, so scores do not depend on batch composition.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import datasets

from .longbench_tasks import middle_truncate_ids

logger = logging.getLogger(__name__)

__all__ = [
    "answer_log_likelihoods",
    "context_dependence_scores",
    "default_prompt_fn",
    "select_by_context_dependence",
]

PromptFn = Callable[[dict[str, Any]], tuple[str, str, str]]


def default_prompt_fn(row: dict[str, Any]) -> tuple[str, str, str]:
    """``(with_context, without_context, answer)`` for a composed or a flat row (module docstring)."""
    from ..synthesis.task_templates import render_task_prompt, template_for

    task = row.get("task") or ""
    messages = row.get("messages")
    if messages:
        users = [m for m in messages if m["role"] == "user"]
        assistants = [m for m in messages if m["role"] == "assistant"]
        if not users or not assistants:
            raise ValueError("a row's messages need a user turn and an assistant turn")
        instruction = row.get("instruction")
        if instruction is None:
            raise ValueError("composed rows need an 'instruction' column to build the no-context prompt")
        without, _ = render_task_prompt(template_for(task), [], instruction)
        return users[-1]["content"], without, assistants[-1]["content"]
    missing = [k for k in ("context", "instruction", "answer") if row.get(k) is None]
    if missing:
        raise ValueError(
            f"row has neither 'messages' nor the flat columns context/instruction/answer (missing {missing}); "
            "pass prompt_fn= to build prompts"
        )
    template = template_for(task)
    with_ctx, _ = render_task_prompt(template, [row["context"]], row["instruction"])
    without, _ = render_task_prompt(template, [], row["instruction"])
    return with_ctx, without, row["answer"]


def _load(model: Any, tokenizer: Any, device: str | None) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(model, str):
        model = AutoModelForCausalLM.from_pretrained(model, dtype="auto")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
    if device is not None:
        model = model.to(device)
    if tokenizer is None or isinstance(tokenizer, str):
        name = tokenizer or getattr(getattr(model, "config", None), "_name_or_path", None)
        if not name:
            raise ValueError("pass tokenizer= (the model has no name or path to load one from)")
        tokenizer = AutoTokenizer.from_pretrained(name)
    return model, tokenizer


def _prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def _model_device(model: Any) -> Any:
    import torch

    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def answer_log_likelihoods(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    batch_size: int = 4,
    max_length: int | None = None,
    reduction: Literal["mean", "sum"] = "mean",
    progress_desc: str | None = "Answer log-likelihoods",
) -> list[float]:
    """Log-likelihood of each ``answers[i]`` after ``prompts[i]`` under a causal LM.

    ``reduction="mean"`` averages over answer tokens, ``"sum"`` adds them. Answers that tokenize
    to nothing get ``nan``. A progress bar named ``progress_desc`` (``None``: none) follows the batches.
    """
    import torch

    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        pad_id = 0

    pairs: list[tuple[list[int], int]] = []  # (ids, answer length)
    for prompt, answer in zip(prompts, answers):
        a_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
        p_ids = _prompt_ids(tokenizer, prompt)
        if not p_ids:  # condition on one start token so the first answer token has a prediction
            start_id = next((t for t in (tokenizer.bos_token_id, tokenizer.eos_token_id) if t is not None), pad_id)
            p_ids = [start_id]
        if max_length is not None and len(p_ids) + len(a_ids) > max_length:
            room = max_length - len(a_ids)
            if room < 1:
                raise ValueError(f"max_length={max_length} is shorter than an answer ({len(a_ids)} tokens)")
            p_ids = middle_truncate_ids(p_ids, room)
        pairs.append((p_ids + a_ids, len(a_ids)))

    out: list[float] = [math.nan] * len(pairs)
    # longest first: similar lengths share a batch, and an out-of-memory error shows up at once
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]), reverse=True)
    device = _model_device(model)
    was_training = getattr(model, "training", False)
    model.eval()
    from ..utils.progress import progress_bar

    bar = progress_bar(total=len(order), desc=progress_desc or "", unit="ex", enabled=progress_desc is not None)
    try:
        for start in range(0, len(order), batch_size):
            idx = [i for i in order[start : start + batch_size] if pairs[i][1] > 0]
            bar.update(len(order[start : start + batch_size]))
            if not idx:
                continue
            width = max(len(pairs[i][0]) for i in idx)
            keep = max(pairs[i][1] for i in idx) + 1
            input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids = pairs[i][0]
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention[row, width - len(ids) :] = 1
            position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
            kwargs: dict[str, Any] = {
                "input_ids": input_ids.to(device),
                "attention_mask": attention.to(device),
                "position_ids": position_ids.to(device),
                "use_cache": False,  # one scoring forward: a cache would only cost memory
            }
            with torch.inference_mode():
                try:
                    logits = model(**kwargs, logits_to_keep=keep).logits
                except TypeError:  # models without logits_to_keep
                    logits = model(**kwargs).logits
                logits = logits[:, -keep:, :].float()
                # logits[:, j] predicts token width-keep+j+1; the answer is the last n tokens
                log_probs = torch.log_softmax(logits[:, :-1, :], dim=-1)
                targets = input_ids[:, width - keep + 1 :].to(log_probs.device)
                token_ll = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            for row, i in enumerate(idx):
                n = pairs[i][1]
                ll = token_ll[row, -n:]
                out[i] = float(ll.sum() if reduction == "sum" else ll.mean())
    finally:
        bar.close()
        if was_training:
            model.train()
    return out


def context_dependence_scores(
    rows: datasets.Dataset | Sequence[dict[str, Any]],
    model: Any,
    tokenizer: Any = None,
    *,
    batch_size: int = 4,
    max_length: int | None = None,
    reduction: Literal["mean", "sum"] = "mean",
    prompt_fn: PromptFn | None = None,
    device: str | None = None,
) -> list[float]:
    """Per-row ``LL(answer | with context) - LL(answer | without context)``.

    ``model`` is a loaded causal LM or a path / Hub id; ``tokenizer`` defaults to the model's.
    """
    model, tokenizer = _load(model, tokenizer, device)
    build = prompt_fn or default_prompt_fn
    with_ctx, without, answers = [], [], []
    for row in rows:
        w, wo, a = build(dict(row))
        with_ctx.append(w)
        without.append(wo)
        answers.append(a)
    common = {"batch_size": batch_size, "max_length": max_length, "reduction": reduction}
    ll_with = answer_log_likelihoods(model, tokenizer, with_ctx, answers, **common,
                                     progress_desc="Context dependence: with context")
    ll_without = answer_log_likelihoods(model, tokenizer, without, answers, **common,
                                        progress_desc="Context dependence: without context")
    return [a - b for a, b in zip(ll_with, ll_without)]


def select_by_context_dependence(
    ds: datasets.Dataset,
    model: Any,
    tokenizer: Any = None,
    top_fraction: float = 0.5,
    *,
    batch_size: int = 4,
    max_length: int | None = None,
    reduction: Literal["mean", "sum"] = "mean",
    prompt_fn: PromptFn | None = None,
    column: str | None = "context_dependence",
    device: str | None = None,
) -> datasets.Dataset:
    """Keep the ``top_fraction`` of ``ds`` with the highest context dependence.

    The kept rows stay in their original order; with ``column`` set, the score is added as that
    column (of the returned dataset). At least one row is kept from a non-empty dataset; rows whose
    score is ``nan`` (empty answer) rank last.
    """
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    scores = context_dependence_scores(
        ds,
        model,
        tokenizer,
        batch_size=batch_size,
        max_length=max_length,
        reduction=reduction,
        prompt_fn=prompt_fn,
        device=device,
    )
    if column is not None:
        if column in ds.column_names:
            ds = ds.remove_columns(column)
        ds = ds.add_column(column, scores)
    if len(ds) == 0:
        return ds
    k = max(1, round(top_fraction * len(ds)))

    def rank_key(i: int) -> tuple[int, float, int]:
        return (1, 0.0, i) if math.isnan(scores[i]) else (0, -scores[i], i)

    ranked = sorted(range(len(scores)), key=rank_key)
    keep = sorted(ranked[:k])
    logger.info("Context dependence: keeping %d of %d rows (top %.0f%%)", k, len(ds), 100 * top_fraction)
    return ds.select(keep)
