"""The embedded backend: an in-process ``transformers`` causal LM, batched generation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from .base import GenerationBackend, GenerationRequest, GenerationResult

logger = logging.getLogger(__name__)


class TransformersBackend(GenerationBackend):
    """Generate with a local ``transformers`` model (no server).

    Args:
        model: Model id or local path (or an already loaded ``PreTrainedModel``).
        tokenizer: Tokenizer id/path/object (default: the model's).
        batch_size: Requests generated together (left padding).
        device: ``"cuda"``, ``"cpu"``, ... (default: cuda when available).
        dtype: Torch dtype name for loading (default ``"auto"``).

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
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.batch_size = int(batch_size)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        if isinstance(model, str):
            self._name = model
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(device)
        else:
            self._name = getattr(getattr(model, "config", None), "_name_or_path", type(model).__name__)
            self.model = model
        self.model.eval()
        if tokenizer is None or isinstance(tokenizer, str):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer or self._name)
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

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

    def _generate_batch(self, batch: list[GenerationRequest]) -> list[GenerationResult]:
        import torch

        try:
            prompts = [self._render(r) for r in batch]
            # a chat template writes its own BOS; a raw prompt gets the tokenizer's (as LongBench's pred.py)
            with_bos = not getattr(self.tokenizer, "chat_template", None)
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=with_bos).to(self.device)
            first = batch[0]
            do_sample = first.temperature > 0
            gen_kwargs: dict[str, Any] = {
                "max_new_tokens": max(r.max_new_tokens for r in batch),
                "do_sample": do_sample,
                "pad_token_id": self.tokenizer.pad_token_id,
            }
            if do_sample:
                gen_kwargs["temperature"] = first.temperature
                if first.top_p is not None:
                    gen_kwargs["top_p"] = first.top_p
            if first.seed is not None:
                torch.manual_seed(first.seed)
            with torch.inference_mode():
                out = self.model.generate(**enc, **gen_kwargs)
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            results = []
            for req, row, mask in zip(batch, new_tokens, enc["attention_mask"]):
                ids = row.tolist()
                stopped = self.tokenizer.eos_token_id in ids
                if stopped:
                    ids = ids[: ids.index(self.tokenizer.eos_token_id)]
                ids = [t for t in ids if t != self.tokenizer.pad_token_id][: req.max_new_tokens]
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                finish = "stop" if stopped or len(ids) < req.max_new_tokens else "length"
                results.append(
                    GenerationResult(key=req.key, text=text, tokens_in=int(mask.sum()), tokens_out=len(ids),
                                     extra={"finish_reason": finish})
                )
            return results
        except Exception as err:  # noqa: BLE001 - a failed batch is recorded, not raised
            logger.warning("Local generation failed for a batch of %d: %s", len(batch), err)
            return [GenerationResult(key=r.key, error=f"local_generation_error: {type(err).__name__}") for r in batch]

    async def aclose(self) -> None:
        pass
