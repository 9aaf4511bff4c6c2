"""A scripted generation backend for tests and examples: answers come from a table, nothing runs."""

from __future__ import annotations

from ..backends.base import GenerationBackend, GenerationRequest, GenerationResult


class ScriptedBackend(GenerationBackend):
    """Answers each request from ``answers[key_of(request)]`` (``""`` when absent; ``None`` = a failed
    request, reported as ``http_503``) and records every request in :attr:`requests`.

    Args:
        answers: ``key -> text`` (or ``None`` for a failure).
        model: What :meth:`model_id` reports.
    """

    kind = "scripted"

    def __init__(self, answers: dict[str, str | None], model: str = "org/scripted-model") -> None:
        self.answers = answers
        self.model = model
        self.requests: list[GenerationRequest] = []

    def key_of(self, request: GenerationRequest) -> str:
        """The table key of ``request`` (its cache key; override to key on the prompt)."""
        return request.key

    async def model_id(self) -> str:
        return self.model

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        text = self.answers.get(self.key_of(request), "")
        if text is None:
            return GenerationResult(key=request.key, error="http_503")
        return GenerationResult(key=request.key, text=text)
