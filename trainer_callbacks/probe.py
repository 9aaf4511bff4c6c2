"""A cheap lost-in-the-middle probe during training: answer accuracy by the relevant document's position.

:class:`LongContextProbeCallback` takes a few held-out composed rows (``messages``, ``answer``,
``context_spans``, ``relevant_index``; see :data:`hf_context_synthesis.synthesis.schema.ROW_FEATURES`) and, for each,
rebuilds the user prompt with the relevant document moved to the **beginning**, the **middle** and the
**end** of the document list (the other documents keep their order; the template text around and
between the documents is kept from the original prompt using ``context_spans``). Every
``every_n_steps`` optimizer steps (and at the last step when ``at_train_end``), it greedy-generates a
short answer for each rebuilt prompt with ``torch.no_grad()`` in eval mode (the model goes back to
its previous mode afterwards) and logs, for each position ``p``:

* ``probe/accuracy@p``: fraction of answers whose normalized text
  (:func:`hf_context_synthesis.evaluation.metrics.normalize_answer`) contains the normalized reference answer;
* ``probe/f1@p``: mean token F1 (:func:`hf_context_synthesis.evaluation.metrics.qa_f1_score`).

Cost: ``len(examples) * len(positions)`` generations of ``max_new_tokens`` tokens, one prompt at a time
(no padding, lowest memory). Keep ``examples`` small (default cap 8) and prefer short-answer QA rows:
when the examples mix tasks, rows of tasks scored by ROUGE (summaries) are dropped because containment
of a long summary is meaningless. Under multi-process training every rank runs the probe (sharded
models need all ranks for generation); the Trainer logs from the main process only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hf_context_synthesis.evaluation.metrics import TASK_METRICS, normalize_answer, qa_f1_score

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_POSITIONS", "LongContextProbeCallback", "build_probe_prompts", "relevant_slot_for"]

#: Position labels probed by default, in the order they are logged.
DEFAULT_POSITIONS: tuple[str, ...] = ("begin", "middle", "end")


def relevant_slot_for(position: str, num_documents: int) -> int:
    """Index the relevant document takes among ``num_documents`` for a position label.

    ``begin`` -> 0, ``middle`` -> ``num_documents // 2``, ``end`` -> ``num_documents - 1``; an integer
    string is used as an index (clamped to the list).
    """
    if num_documents < 1:
        raise ValueError("num_documents must be >= 1")
    if position in ("begin", "beginning"):
        return 0
    if position == "middle":
        return num_documents // 2
    if position == "end":
        return num_documents - 1
    try:
        return max(0, min(num_documents - 1, int(position)))
    except ValueError:
        raise ValueError(f"unknown probe position {position!r}; use begin, middle, end or an index") from None


def build_probe_prompts(row: Mapping[str, Any], positions: Sequence[str] = DEFAULT_POSITIONS) -> list[dict[str, Any]]:
    """Rebuild ``row``'s user prompt once per position with the relevant document moved there.

    Each result holds ``messages`` (the turns up to the rebuilt user prompt), ``answer``, ``position``,
    ``slot`` (index of the relevant document in the new order), ``seed_id`` and ``documents`` (new order).

    Raises ``ValueError`` naming the row and field when ``context_spans`` / ``relevant_index`` do not
    fit the prompt.
    """
    name = row.get("seed_id", "<row>")
    messages = list(row.get("messages") or [])
    user_turns = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not user_turns:
        raise ValueError(f"probe row {name}: field 'messages' has no user turn")
    ui = user_turns[0]
    prompt = messages[ui]["content"]
    spans = [tuple(int(x) for x in s) for s in (row.get("context_spans") or [])]
    if not spans:
        raise ValueError(f"probe row {name}: field 'context_spans' is empty")
    for (s, e), nxt in zip(spans, spans[1:] + [(len(prompt), len(prompt))]):
        if not (0 <= s <= e <= nxt[0] <= len(prompt)):
            raise ValueError(f"probe row {name}: field 'context_spans' {spans} does not fit a prompt of {len(prompt)} chars")
    rel = row.get("relevant_index")
    if rel is None or not 0 <= int(rel) < len(spans):
        raise ValueError(f"probe row {name}: field 'relevant_index'={rel!r} outside 0..{len(spans) - 1}")
    rel = int(rel)
    docs = [prompt[s:e] for s, e in spans]
    gaps = [prompt[spans[i][1] : spans[i + 1][0]] for i in range(len(spans) - 1)]
    head, tail = prompt[: spans[0][0]], prompt[spans[-1][1] :]
    others = docs[:rel] + docs[rel + 1 :]
    out: list[dict[str, Any]] = []
    for position in positions:
        slot = relevant_slot_for(position, len(docs))
        order = others[:slot] + [docs[rel]] + others[slot:]
        text = head + "".join(d + (gaps[i] if i < len(gaps) else "") for i, d in enumerate(order)) + tail
        turns = [dict(m) for m in messages[:ui]] + [{"role": "user", "content": text}]
        out.append(
            {
                "messages": turns,
                "answer": str(row.get("answer", "")),
                "position": position,
                "slot": slot,
                "seed_id": name,
                "documents": order,
            }
        )
    return out


def _is_short_answer_task(row: Mapping[str, Any]) -> bool:
    metric = TASK_METRICS.get(str(row.get("task", "")))
    return metric is None or metric is qa_f1_score


class LongContextProbeCallback(TrainerCallback):
    """Logs ``probe/accuracy@<position>`` and ``probe/f1@<position>`` every ``every_n_steps`` steps.

    Args:
        examples: Held-out composed rows (a ``datasets.Dataset`` or a sequence of dicts).
        tokenizer: Tokenizer with a chat template; default: the trainer's ``processing_class``.
        every_n_steps: Probe when ``global_step % every_n_steps == 0``; ``0`` probes only at train end.
        max_examples: Use at most this many rows (after dropping summary-task rows, see module docs).
        positions: Position labels (``begin``, ``middle``, ``end`` or integer indices).
        max_new_tokens: Greedy generation length per answer.
        max_prompt_tokens: Skip rebuilt prompts longer than this (``None``: no limit).
        at_train_end: Also probe at the last training step.
    """

    def __init__(
        self,
        examples: Iterable[Mapping[str, Any]],
        tokenizer: Any | None = None,
        *,
        every_n_steps: int = 0,
        max_examples: int = 8,
        positions: Sequence[str] = DEFAULT_POSITIONS,
        max_new_tokens: int = 16,
        max_prompt_tokens: int | None = None,
        at_train_end: bool = True,
    ) -> None:
        if every_n_steps < 0:
            raise ValueError("every_n_steps must be >= 0")
        rows = [dict(r) for r in examples]
        short = [r for r in rows if _is_short_answer_task(r)]
        if short and len(short) < len(rows):
            logger.info("probe: dropped %d rows of summary tasks (containment is not meaningful)", len(rows) - len(short))
            rows = short
        rows = rows[:max_examples]
        if not rows:
            raise ValueError("LongContextProbeCallback needs at least one example row")
        self.positions = tuple(positions)
        self.prompts = [p for r in rows for p in build_probe_prompts(r, self.positions)]
        self.tokenizer = tokenizer
        self.every_n_steps = every_n_steps
        self.max_new_tokens = max_new_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.at_train_end = at_train_end
        self.history: list[dict[str, float]] = []
        self._pending: dict[str, float] | None = None
        self._last_probed_step = -1

    # -- probing -------------------------------------------------------------------------------
    def run_probe(self, model: Any, tokenizer: Any | None = None) -> dict[str, float]:
        """Generate for every rebuilt prompt and return the metrics (no logging, no mode change left behind)."""
        import torch

        tok = tokenizer or self.tokenizer
        if tok is None:
            raise ValueError("LongContextProbeCallback needs a tokenizer (none given and the trainer has none)")
        device = next(model.parameters()).device
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        hits: dict[str, list[float]] = {p: [] for p in self.positions}
        f1s: dict[str, list[float]] = {p: [] for p in self.positions}
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for probe in self.prompts:
                    ids = tok.apply_chat_template(
                        probe["messages"], add_generation_prompt=True, tokenize=True, return_dict=True
                    )["input_ids"]
                    if self.max_prompt_tokens is not None and len(ids) > self.max_prompt_tokens:
                        logger.warning(
                            "probe %s@%s: %d prompt tokens > max_prompt_tokens=%d, skipped",
                            probe["seed_id"], probe["position"], len(ids), self.max_prompt_tokens,
                        )
                        continue
                    input_ids = torch.tensor([ids], device=device)
                    out = model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        max_new_tokens=self.max_new_tokens,
                        do_sample=False,
                        pad_token_id=pad_id,
                    )
                    text = tok.decode(out[0, input_ids.shape[1] :], skip_special_tokens=True)
                    ref = normalize_answer(probe["answer"])
                    hits[probe["position"]].append(float(bool(ref) and ref in normalize_answer(text)))
                    f1s[probe["position"]].append(qa_f1_score(text, probe["answer"]))
        finally:
            model.train(was_training)
        metrics: dict[str, float] = {}
        for p in self.positions:
            if hits[p]:
                metrics[f"probe/accuracy@{p}"] = sum(hits[p]) / len(hits[p])
                metrics[f"probe/f1@{p}"] = sum(f1s[p]) / len(f1s[p])
        return metrics

    def _due(self, state: TrainerState) -> bool:
        if state.global_step == self._last_probed_step:
            return False
        if self.every_n_steps > 0 and state.global_step % self.every_n_steps == 0:
            return True
        return self.at_train_end and state.max_steps > 0 and state.global_step >= state.max_steps

    # -- callback events -----------------------------------------------------------------------
    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Run the probe when due and ask the Trainer to log at this step."""
        if not self._due(state):
            return control
        model = kwargs.get("model")
        metrics = self.run_probe(model, self.tokenizer or kwargs.get("processing_class"))
        self._last_probed_step = state.global_step
        self.history.append({**metrics, "step": float(state.global_step)})
        logger.info("probe at step %d: %s", state.global_step, metrics)
        self._pending = metrics
        control.should_log = True
        return control

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        """Put pending probe metrics into this log (and the matching ``state.log_history`` entry)."""
        if not self._pending or logs is None or any(k.startswith("eval_") for k in logs):
            return
        logs.update(self._pending)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(self._pending)
        self._pending = None

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Record probe metrics that no log picked up (e.g. training stopped before logging)."""
        if self._pending:
            state.log_history.append({**self._pending, "step": state.global_step})
            self._pending = None
