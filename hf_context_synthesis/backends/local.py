"""The embedded backend: an in-process ``transformers`` causal LM, batched generation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from .base import GenerationBackend, GenerationRequest, GenerationResult

logger = logging.getLogger(__name__)


#: Default of the embedded backend against degenerate loops of small models ("A.A.A.A..."): a mild
#: repetition penalty (CTRL's, as ``generate``'s ``repetition_penalty``). The quality filter
#: ``repetitive`` rejects what still loops.
DEFAULT_REPETITION_PENALTY = 1.1
#: ``no_repeat_ngram_size`` is off by default: transformers' processor walks every sequence in Python at
#: every step, which made SmolLM2-135M on 2 CPU cores 3.4x slower (2.8 vs 9.4 tokens/s, 4 x 40 tokens).
DEFAULT_NO_REPEAT_NGRAM_SIZE = 0


class TransformersBackend(GenerationBackend):
    """Generate with a local ``transformers`` model (no server).

    Args:
        model: Model id or local path (or an already loaded ``PreTrainedModel``).
        tokenizer: Tokenizer id/path/object (default: the model's).
        batch_size: Requests generated together (left padding).
        device: ``"cuda"``, ``"cpu"``, ... (default: cuda when available).
        dtype: Torch dtype name for loading (default ``"auto"``).
        repetition_penalty: ``generate``'s repetition penalty (``1.0`` = none).
        no_repeat_ngram_size: Forbid repeating any n-gram of this size (``0`` = off).
        response_prefix: Text written at the start of the model's reply before it generates (after the
            chat template's generation prompt); the result's text starts with it. The synthesizer passes
            ``"Context:"``, the start its prompt asks for: small models then write the document instead of
            echoing the prompt. ``""`` = none.
        gguf_file: A GGUF file inside ``model`` (a folder) to load with ``from_pretrained(..., gguf_file=)``.
            ``model`` may also name a packaged model, ``pkg:<package>/<file>``
            (:mod:`hf_context_synthesis.utils.packaged_models`).
        progress: Show a bar per batch with finished sequences and tokens/s (also subject to
            ``datasets.disable_progress_bars()``).

    Decoding is a token loop over a KV cache: each sequence stops at its EOS (or its own
    ``max_new_tokens``) and leaves the batch at once (its rows are dropped from the cache), so a
    finished sequence costs no more compute while a longer one runs on. Greedy decoding gives
    ``model.generate``'s tokens.

    Sampling seeds: a batch is sampled under ``torch.manual_seed`` of its first request's seed, so
    outputs are reproducible for the same batches (batch composition depends on the order of
    requests, which the synthesizer keeps deterministic).
    """

    kind = "transformers"

    def __init__(
        self,
        model: Any,
        *,
        tokenizer: Any = None,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str = "auto",
        repetition_penalty: float = DEFAULT_REPETITION_PENALTY,
        no_repeat_ngram_size: int = DEFAULT_NO_REPEAT_NGRAM_SIZE,
        gguf_file: str | None = None,
        progress: bool = True,
        response_prefix: str = "",
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.batch_size = int(batch_size)
        self.repetition_penalty = float(repetition_penalty)
        self.no_repeat_ngram_size = int(no_repeat_ngram_size)
        self.progress = bool(progress)
        self.response_prefix = str(response_prefix or "")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        if isinstance(model, str):
            from ..utils.packaged_models import materialize_packaged_model

            self._name = model if not gguf_file else f"{model.rstrip('/')}/{gguf_file}"
            # pkg:<package>/<file>: found in the installed package and loaded once into a plain folder
            model = materialize_packaged_model(model)
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype, **extra).to(device)
        else:
            self._name = getattr(getattr(model, "config", None), "_name_or_path", type(model).__name__)
            self.model = model
        self.model.eval()
        if tokenizer is None:  # the model's own (a GGUF file carries its tokenizer)
            tokenizer = AutoTokenizer.from_pretrained(model if isinstance(model, str) else self._name, **extra)
        elif isinstance(tokenizer, str):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def sampling_settings(self) -> dict[str, Any]:
        """The backend's own decoding settings that change outputs (for cache keys)."""
        settings: dict[str, Any] = {"repetition_penalty": self.repetition_penalty,
                                    "no_repeat_ngram_size": self.no_repeat_ngram_size}
        if self.response_prefix:  # absent when off: keys of runs without a prefix stay as they were
            settings["response_prefix"] = self.response_prefix
        return settings

    async def model_id(self) -> str:
        return self._name

    @property
    def max_concurrency(self) -> int:
        return self.batch_size

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return (await asyncio.to_thread(self._generate_batch, [request]))[0]

    async def stream(self, requests: Iterable[GenerationRequest]) -> AsyncIterator[GenerationResult]:
        iterator = iter(requests)
        while True:
            batch: list[GenerationRequest] = []
            for req in iterator:
                batch.append(req)
                if len(batch) >= self.batch_size:
                    break
            if not batch:
                return
            for result in await asyncio.to_thread(self._generate_batch, batch):
                yield result

    def _render(self, request: GenerationRequest) -> str:
        return self._render_prompt(request) + self.response_prefix

    def _render_prompt(self, request: GenerationRequest) -> str:
        messages = list(request.messages)
        if getattr(self.tokenizer, "chat_template", None):
            try:
                return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception:  # template without a system role: fold the system prompt into the user turn
                if messages and messages[0]["role"] == "system":
                    system, rest = messages[0]["content"], messages[1:]
                    if rest:
                        rest = [{**rest[0], "content": system + "\n\n" + rest[0]["content"]}] + rest[1:]
                    return self.tokenizer.apply_chat_template(rest, tokenize=False, add_generation_prompt=True)
                raise
        return "\n\n".join(m["content"] for m in messages)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.tokenizer.eos_token_id, getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)):
            if isinstance(source, int):
                ids.add(source)
            elif source is not None:
                ids.update(int(t) for t in source)
        return ids

    def _processors(self, first: GenerationRequest) -> Any:
        from transformers import LogitsProcessorList
        from transformers.generation.logits_process import (
            NoRepeatNGramLogitsProcessor,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopPLogitsWarper,
        )

        procs = LogitsProcessorList()
        if self.repetition_penalty != 1.0:
            procs.append(RepetitionPenaltyLogitsProcessor(self.repetition_penalty))
        if self.no_repeat_ngram_size > 0:
            procs.append(NoRepeatNGramLogitsProcessor(self.no_repeat_ngram_size))
        if first.temperature > 0:
            procs.append(TemperatureLogitsWarper(first.temperature))
            if first.top_p is not None:
                procs.append(TopPLogitsWarper(first.top_p))
        return procs

    def _decode(self, enc: Any, batch: list[GenerationRequest]) -> tuple[list[list[int]], list[bool]]:
        """Token loop with per-sequence stops: returns each request's new tokens and whether it hit EOS."""
        import time

        import torch
        from transformers import DynamicCache

        from ..utils.progress import progress_bar

        import inspect

        # transformers >= 5.x names the KV-cache argument ``cache`` (``past_key_values`` is deprecated)
        cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        # only the last position's logits are needed (the prefill would otherwise project every prompt token)
        last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(self.model.forward).parameters else {}
        first = batch[0]
        do_sample = first.temperature > 0
        processors = self._processors(first)
        eos = self._eos_ids()
        limits = [int(r.max_new_tokens) for r in batch]
        input_ids, attn = enc["input_ids"], enc["attention_mask"]
        generated: list[list[int]] = [[] for _ in batch]
        stopped = [False] * len(batch)
        active = list(range(len(batch)))
        seqs = input_ids
        cache = DynamicCache(config=self.model.config)
        position_ids = (attn.long().cumsum(-1) - 1).clamp(min=0)
        bar = progress_bar(total=len(batch), desc="Generating", unit="seq", enabled=self.progress, leave=False)
        start, produced = time.perf_counter(), 0
        shown = start
        stream = getattr(bar, "fp", None)
        redraw_every = 1.0 if getattr(stream, "isatty", lambda: False)() else 30.0
        try:
            out = self.model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids,
                             use_cache=True, **last_only, **{cache_arg: cache})
            while active:
                scores = processors(seqs, out.logits[:, -1, :].float())
                if do_sample:
                    nxt = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
                else:
                    nxt = scores.argmax(dim=-1)
                keep: list[int] = []
                for row, i in enumerate(active):
                    token = int(nxt[row])
                    if token in eos:
                        stopped[i] = True
                        continue
                    generated[i].append(token)
                    produced += 1
                    if len(generated[i]) < limits[i]:
                        keep.append(row)
                done = len(active) - len(keep)
                if done:
                    bar.update(done)
                now = time.perf_counter()
                if not getattr(bar, "disable", True) and (done or now - shown >= redraw_every):
                    # tokens/s and the sequences still running, redrawn within a batch (each second on a
                    # terminal, every 30 s into a log file, where each redraw is a line)
                    bar.set_postfix_str(f"{produced / max(now - start, 1e-9):,.0f} tok/s, {len(keep)} running")
                    shown = now
                if not keep:
                    break
                if len(keep) < len(active):  # finished sequences leave the batch (and the KV cache)
                    index = torch.tensor(keep, device=seqs.device)
                    cache.batch_select_indices(index)
                    seqs, attn, nxt = seqs[index], attn[index], nxt[index]
                    active = [active[row] for row in keep]
                seqs = torch.cat([seqs, nxt[:, None]], dim=-1)
                attn = torch.cat([attn, attn.new_ones((attn.shape[0], 1))], dim=-1)
                out = self.model(input_ids=nxt[:, None], attention_mask=attn,
                                 position_ids=attn.long().sum(-1, keepdim=True) - 1, use_cache=True, **{cache_arg: cache})
        finally:
            bar.close()
        return generated, stopped

    def _generate_batch(self, batch: list[GenerationRequest]) -> list[GenerationResult]:
        import torch

        try:
            prompts = [self._render(r) for r in batch]
            # a chat template writes its own BOS; a raw prompt gets the tokenizer's (as LongBench's pred.py)
            with_bos = not getattr(self.tokenizer, "chat_template", None)
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=with_bos).to(self.device)
            if batch[0].seed is not None:
                torch.manual_seed(batch[0].seed)
            with torch.inference_mode():
                generated, stopped = self._decode(enc, batch)
            results = []
            for req, ids, hit_eos, mask in zip(batch, generated, stopped, enc["attention_mask"]):
                text = self.response_prefix + self.tokenizer.decode(ids, skip_special_tokens=True)
                results.append(
                    GenerationResult(key=req.key, text=text, tokens_in=int(mask.sum()), tokens_out=len(ids),
                                     extra={"finish_reason": "stop" if hit_eos else "length"})
                )
            return results
        except Exception as err:  # noqa: BLE001 - a failed batch is recorded, not raised
            logger.warning("Local generation failed for a batch of %d: %s", len(batch), err)
            return [GenerationResult(key=r.key, error=f"local_generation_error: {type(err).__name__}") for r in batch]

    async def aclose(self) -> None:
        pass
