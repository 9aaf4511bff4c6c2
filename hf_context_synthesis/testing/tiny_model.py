"""Tiny local models for tests and benchmarks: nothing is downloaded.

:func:`make_tiny_llama` trains a byte-level BPE tokenizer with ``tokenizers`` on a small built-in
corpus (plus any text you pass), wraps it with a chat template, builds a randomly initialised
``LlamaForCausalLM`` from a config, and saves both to a directory that ``from_pretrained`` loads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

#: Chat template of the tiny tokenizer. Assistant turns are wrapped in ``{% generation %}`` so
#: ``apply_chat_template(..., return_assistant_tokens_mask=True)`` works.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|pad|>", "<|start|>", "<|end|>", "<|unk|>"]

_BASE_CORPUS = """
Context: The report describes the history of the village, its river, the old mill and the people who lived there.
Question: Who built the mill? Answer: The miller's family built it in 1820 after the flood.
The committee discussed the budget, the schedule and the new design of the remote control.
Scientists measured the temperature, the pressure and the speed of the reaction in the laboratory.
A summary of the government report: the agency should improve oversight of grants and contracts.
The film was directed by a French director born in Paris; the novel was written by an English author.
yes no one two three four five six seven eight nine ten hundred thousand million 0 1 2 3 4 5 6 7 8 9
"""


def _corpus(extra_text: Iterable[str] | None) -> list[str]:
    lines = [line for line in _BASE_CORPUS.strip().splitlines() if line.strip()]
    if extra_text is not None:
        lines.extend(t for t in extra_text if t)
    return lines * 4


def make_tiny_tokenizer(extra_text: Iterable[str] | None = None, vocab_size: int = 1024):
    """Train a byte-level BPE tokenizer locally and return a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(extra_text), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|end|>",
        bos_token="<|start|>",
        unk_token="<|unk|>",
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast


def make_tiny_llama(
    directory: str | os.PathLike[str],
    *,
    extra_text: Iterable[str] | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_position_embeddings: int = 131072,
    vocab_size: int = 1024,
    seed: int = 0,
) -> str:
    """Save a tiny random ``LlamaForCausalLM`` and its tokenizer to ``directory`` and return the path.

    The result loads with ``AutoModelForCausalLM.from_pretrained(path)`` and
    ``AutoTokenizer.from_pretrained(path)``; its tokenizer has a chat template with generation
    markers, ``eos_token="<|end|>"`` and ``pad_token="<|pad|>"``.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = os.fspath(directory)
    os.makedirs(path, exist_ok=True)
    tokenizer = make_tiny_tokenizer(extra_text, vocab_size=vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
