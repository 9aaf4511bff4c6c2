"""Column layout of the rows this library produces (one place, used by builder, packing and cards)."""

from __future__ import annotations

import datasets

#: Features of a composed long-context SFT row.
#:
#: * ``messages``: ``[{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]``
#:   where ``prompt`` is the task template filled with the joined documents and the instruction.
#: * ``task`` / ``instruction`` / ``answer``: the seed pair and its task name.
#: * ``seed_id``: ``"<task>/<row>"``, stable id of the seed row.
#: * ``relevant_context``: the synthesized document that leads to the answer.
#: * ``relevant_index``: index of that document among the example's documents (0-based).
#: * ``num_documents``: how many documents the example holds (relevant + distractors).
#: * ``context_spans``: ``[start, end)`` character offsets of every document inside
#:   ``messages[0]["content"]``, in document order; packing uses them to drop distractors first.
#: * ``num_tokens``: token count of the whole chat (see ``SynthesisConfig.tokenizer``).
#: * ``generator``: id of the model that synthesized the contexts.
#: * ``provenance``: how the relevant context was generated: ``attempts`` (generations it took, 1 =
#:   accepted at once), ``finish_reason`` of the accepted generation (``"stop"``, or ``"length"`` when
#:   it hit ``max_new_tokens``), ``tokens_in`` / ``tokens_out`` of that generation; ``None`` fields
#:   when unknown (e.g. rows composed outside a synthesis run).
ROW_FEATURES = datasets.Features(
    {
        "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "task": datasets.Value("string"),
        "seed_id": datasets.Value("string"),
        "instruction": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "relevant_context": datasets.Value("string"),
        "relevant_index": datasets.Value("int32"),
        "num_documents": datasets.Value("int32"),
        "context_spans": datasets.List(datasets.List(datasets.Value("int64"))),
        "num_tokens": datasets.Value("int64"),
        "generator": datasets.Value("string"),
        "provenance": {
            "attempts": datasets.Value("int32"),
            "finish_reason": datasets.Value("string"),
            "tokens_in": datasets.Value("int64"),
            "tokens_out": datasets.Value("int64"),
        },
    }
)

#: The ``provenance`` of a row whose generation is not known.
UNKNOWN_PROVENANCE = {"attempts": None, "finish_reason": None, "tokens_in": None, "tokens_out": None}
