"""The synthesis report: what a run asked for, got, retried and lost."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

#: Characters kept of a rejected output in ``filter_examples`` (the report, the card and the log).
EXCERPT_CHARS = 200


def excerpt(text: Any, limit: int = EXCERPT_CHARS) -> str:
    """A short, one-line, secret-free excerpt of ``text``: secrets redacted (:func:`~hf_context_synthesis.secrecy.redact`,
    before cutting, so a secret across the cut goes too), whitespace collapsed, cut at ``limit``
    characters with an ellipsis."""
    from ..utils.secrecy import redact

    flat = " ".join(str(redact(text if isinstance(text, str) else str(text))).split())
    return flat if len(flat) <= limit else flat[: max(0, limit - 1)].rstrip() + "\u2026"


@dataclass
class SynthesisReport:
    """Counters of one synthesis run (stored as JSON beside the cache and in ``info.description``).

    Three units are counted, each named: **seeds** (seed rows, one context each), **requests** (one
    generation request = one prompt with one sampling seed; a seed may need several when its output is
    unusable) and **attempts** (HTTP attempts; a request may need several on transport errors).

    Args:
        seeds: Seed rows read (valid or not).
        rejected_rows: Seed rows rejected by validation (``on_bad_row="skip"``).
        requested: Seeds that need a context (one per valid seed row).
        cached: Requests answered from the generation cache (no request made).
        generated: Requests the backend answered with a text in this run.
        requests: Requests sent to the backend in this run (answered or failed).
        attempts: HTTP attempts those requests took (``requests + transport_retries``).
        transport_retries: Extra attempts after transport errors (429, 5xx, timeouts, dropped connections).
        regenerated: Requests re-made with a new sampling seed because the previous output was unusable.
        retried: Every retry: ``transport_retries + regenerated``.
        failed: Seeds without a usable context: transport failures after the backend's retries, outputs
            still rejected at the last attempt, near-duplicates dropped by the post-pass, seeds dropped
            by a seed-level check; see ``failure_reasons`` (one count per failed seed).
        synthesized: Seeds that got an accepted context (``synthesized + failed + rejected_rows == seeds``).
        filtered: Generated outputs rejected by parsing or a quality filter (each one was retried with a
            new sampling seed or, at the last attempt, made its seed fail); see ``filter_reasons``.
        examples: Composed rows written.
        tokens_in: Prompt tokens sent (as counted by the backend).
        tokens_out: Tokens generated.
        wall_time_s: Wall-clock seconds of the generation phase.
        failure_reasons: ``reason -> seeds`` that failed for it (sums to ``failed``); server errors are
            grouped by status and normalized message (numbers and ids replaced), the full message of
            each seed is in ``failed_seeds``.
        filter_reasons: ``reason -> generated outputs`` rejected for it (sums to ``filtered``).
        rejected_reasons: ``reason -> seed rows`` rejected by seed validation.
        flagged_reasons: ``reason -> seeds`` kept but flagged (e.g. ``answer_in_instruction``).
        filter_examples: ``reason -> excerpt`` of one rejected output per ``filter_reasons`` reason (the
            one of the lowest seed, :func:`excerpt`: at most 200 characters, secrets redacted), so
            a reader sees what the filters caught.
        failed_seeds: ``seed_id -> reason`` of every failed seed (what could not be produced, and why).
        missing_shards: Shard indices a merge did not get (their seeds fail as ``missing_from_shard_caches``).
    """

    seeds: int = 0
    rejected_rows: int = 0
    requested: int = 0
    cached: int = 0
    generated: int = 0
    requests: int = 0
    attempts: int = 0
    transport_retries: int = 0
    regenerated: int = 0
    retried: int = 0
    failed: int = 0
    synthesized: int = 0
    filtered: int = 0
    examples: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    wall_time_s: float = 0.0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    filter_reasons: dict[str, int] = field(default_factory=dict)
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    flagged_reasons: dict[str, int] = field(default_factory=dict)
    filter_examples: dict[str, str] = field(default_factory=dict)
    failed_seeds: dict[str, str] = field(default_factory=dict)
    missing_shards: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._example_order: dict[str, tuple[int, int]] = {}

    def note_filtered(self, reason: str, text: Any, order: tuple[int, int] = (0, 0)) -> None:
        """Count a rejected output under ``reason`` and keep its excerpt when it is the first of its reason
        by ``order`` (``(seed index, attempt)``: the same excerpt whatever the completion order)."""
        self.count("filter", reason)
        best = self._example_order.get(reason)
        if best is None or order < best:
            self._example_order[reason] = order
            self.filter_examples[reason] = excerpt(text)

    @property
    def accounted(self) -> bool:
        """Whether every seed row is accounted for: ``synthesized + failed + rejected_rows == seeds``."""
        return self.synthesized + self.failed + self.rejected_rows == self.seeds

    @property
    def requests_per_s(self) -> float:
        """Backend requests completed per second of wall time (cached ones excluded)."""
        return self.generated / self.wall_time_s if self.wall_time_s > 0 else 0.0

    def count(self, bucket: str, reason: str) -> None:
        """Add one to ``<bucket>_reasons[reason]`` (``failure``, ``filter``, ``rejected``, ``flagged``)."""
        reasons: dict[str, int] = getattr(self, f"{bucket}_reasons")
        reasons[reason] = reasons.get(reason, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["requests_per_s"] = round(self.requests_per_s, 3)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SynthesisReport":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def summary(self, include_examples: bool = True) -> str:
        """One line for logs, each count with its unit (``include_examples=False`` before composition)."""
        line = (
            f"seeds: {self.seeds} read, {self.rejected_rows} rejected, {self.synthesized} synthesized, "
            f"{self.failed} failed | requests: {self.cached} cached, {self.requests} sent, {self.generated} answered, "
            f"{self.regenerated} regenerated, {self.filtered} outputs filtered | attempts: {self.attempts} "
            f"({self.transport_retries} transport retries) | retried={self.retried} | "
            f"tokens in/out: {self.tokens_in}/{self.tokens_out} | wall {self.wall_time_s:.1f}s, "
            f"{self.requests_per_s:.2f} req/s"
        )
        if include_examples:
            line += f" | examples: {self.examples}"
        return line


def merge_reasons(*counters: dict[str, int]) -> dict[str, int]:
    """Sum reason counters."""
    total: Counter[str] = Counter()
    for c in counters:
        total.update(c)
    return dict(total)


def exit_code(report: SynthesisReport, *, fail_on_failures: bool = False) -> int:
    """The one exit-code rule of every command that synthesizes (``synthesize``, shards, ``merge``, ``run``).

    0 when the run completed: every seed is accounted for in the report, failures included (a
    near-duplicate drop or a server error on some seeds does not stop a pipeline). 1 when it could not
    complete: nothing was synthesized although seeds needed it, shards were missing from a merge,
    or (with ``--fail-on-failures``) any seed failed.
    """
    if report.missing_shards:
        return 1
    if report.requested > 0 and report.synthesized == 0:
        return 1
    if fail_on_failures and report.failed > 0:
        return 1
    return 0


class SynthesisError(RuntimeError):
    """The run produced nothing usable (every seed failed)."""
