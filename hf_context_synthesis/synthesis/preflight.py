"""Checks before the generation phase spends anything, and the served model's id.

:func:`resolve_generator_model` asks the endpoint(s) which model they serve (TGI ``/info``, else
OpenAI ``/v1/models``) so that the dataset cache id, the generation cache keys, the ``generator``
column and the cards record the **model id**, never an endpoint URL: ``127.0.0.1`` vs ``localhost``,
a trailing slash or a swapped fleet member reuse every cached generation.

:func:`run_preflight` runs before the first generation request: the endpoint answers (``/health``,
``/info`` or ``/v1/models``; an unreachable endpoint raises
:class:`~hf_context_synthesis.backends.errors.EndpointUnreachableError` naming the URL), credentials
are accepted, the model id and the tokenizer resolve, the output folder is writable, and the
server's context window (``/info`` ``max_input_tokens`` / ``max_total_tokens``, when it reports them)
holds the longest prompt plus ``max_new_tokens`` (``max_new_tokens`` is capped, with a warning, when
the prompt fits but the total would not; a prompt that does not fit is refused).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import run_coro
from ..backends.discovery import recent_model, remember_model
from ..backends.errors import EndpointUnreachableError, ModelDiscoveryError

logger = logging.getLogger(__name__)

__all__ = ["PreflightResult", "resolve_generator_model", "run_preflight"]


def resolve_generator_model(config: Any) -> Any:
    """``config`` with ``generator_model`` set to the served model when it has endpoints but no model.

    One discovery per endpoint set is reused for :data:`~hf_context_synthesis.backends.discovery.DISCOVERY_TTL` seconds. Raises
    :class:`EndpointUnreachableError` (naming the URL) or :class:`ModelDiscoveryError`.
    """
    if config.generator_model or not config.endpoints:
        return config
    model = recent_model(config.endpoints)
    if model is None:
        from .backend import make_backend

        # discovery needs no tokenizer: build the chat flavour of the backend
        probe_config = dataclasses.replace(config, api="chat", tokenizer=None)
        backend = make_backend(probe_config)

        async def ask() -> str:
            try:
                return await backend.model_id()
            finally:
                await backend.aclose()

        model = run_coro(ask())
        remember_model(config.endpoints, model)
        logger.info("endpoint serves %s (used as generator_model)", model)
    return dataclasses.replace(config, generator_model=model)


@dataclass
class PreflightResult:
    """What :func:`run_preflight` established.

    Args:
        model_id: The served model's id.
        max_new_tokens: ``max_new_tokens`` to request (capped to the server's context window if needed).
        longest_prompt_tokens: Tokens of the longest prompt (``None`` without any count).
        prompt_tokens_estimated: Whether prompt tokens were estimated from characters (no tokenizer).
        context_window: ``{"max_input_tokens": ..., "max_total_tokens": ...}`` as reported by the server.
        warnings: Warnings issued.
    """

    model_id: str
    max_new_tokens: int
    longest_prompt_tokens: int | None = None
    prompt_tokens_estimated: bool = False
    context_window: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def check_writable(path: str | os.PathLike[str], what: str = "output folder") -> None:
    """Raise ``PermissionError`` naming ``path`` unless a file can be created in it (created if missing)."""
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise PermissionError(f"the {what} {path} is not writable ({exc.strerror or exc})") from None


def _members(backend: Any) -> list[Any]:
    members = getattr(backend, "members", None)
    return list(members) if members is not None else [backend]


def _estimate_tokens(messages: Sequence[dict[str, str]]) -> int:
    """A conservative token count without a tokenizer: 1 token per 3 characters + 8 per message."""
    return sum(math.ceil(len(m.get("content", "")) / 3) + 8 for m in messages)


async def run_preflight(
    config: Any,
    backend: Any,
    prompts: Callable[[], Any],
    *,
    output_dir: str | os.PathLike[str] | None = None,
    tokenizer: Any = None,
) -> PreflightResult:
    """Check everything that can be checked before the first generation (see the module docstring).

    Args:
        config: The run's :class:`~hf_context_synthesis.synthesis.config.SynthesisConfig`.
        backend: The generation backend (TGI members are probed; other backends skip the endpoint checks).
        prompts: ``() -> iterable of (seed_id, messages)``: the prompts the run will send.
        output_dir: A folder that must be writable (e.g. the CLI's ``--output``).
        tokenizer: Tokenizer for exact prompt token counts (default: ``config.tokenizer``, loaded here so
            that a wrong id fails now, or the ``api="text"`` backend's).
    """
    if output_dir is not None:
        check_writable(output_dir)
    result = PreflightResult(model_id="", max_new_tokens=config.resolved_max_new_tokens)
    probes = []
    tgi_members = [m for m in _members(backend) if hasattr(m, "probe")]
    if tgi_members:
        probes = await asyncio.gather(*(m.probe() for m in tgi_members))
        reachable = [p for p in probes if p.reachable]
        if not reachable:
            if len(probes) == 1:
                raise EndpointUnreachableError(probes[0].unreachable_message())
            raise EndpointUnreachableError(
                "cannot reach any generation endpoint: " + " | ".join(p.unreachable_message() for p in probes)
            )
        for p in probes:
            if not p.reachable:
                message = f"fleet endpoint {p.endpoint} is unreachable now; the run starts without it"
                logger.warning(message)
                result.warnings.append(message)
        for p in reachable:
            statuses = [s for s, _ in p.answers.values() if s is not None]
            if statuses and all(s in (401, 403) for s in statuses):
                raise PermissionError(
                    f"the generation endpoint {p.endpoint} refused the credentials ({p.describe()}); "
                    "check the endpoint token or headers"
                )
    result.model_id = await backend.model_id()
    if config.endpoints:
        remember_model(config.endpoints, result.model_id)
    for p in probes:
        if p.info is None and p.models and config.generator_model and config.generator_model not in p.models:
            message = (
                f"{p.endpoint} lists the models {', '.join(p.models)}, not generator_model={config.generator_model!r}; "
                "requests may be refused"
            )
            logger.warning(message)
            result.warnings.append(message)

    if tokenizer is None and isinstance(config.tokenizer, str):
        try:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
        except Exception as exc:  # noqa: BLE001 - any loading failure is the same user error
            raise ValueError(
                f"tokenizer={config.tokenizer!r} cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0]})"
            ) from None
    if tokenizer is None:
        for m in tgi_members:
            tokenizer = getattr(m, "_tokenizer", None) or tokenizer

    windows = [_context_window(p.info) for p in probes if p.info]
    windows = [w for w in windows if w]
    if not windows:
        return result
    window = {k: min(w[k] for w in windows if k in w) for k in ("max_input_tokens", "max_total_tokens") if any(k in w for w in windows)}
    result.context_window = window
    longest, longest_id = 0, None
    for seed_id, messages in prompts():
        if tokenizer is not None and hasattr(tokenizer, "apply_chat_template"):
            try:
                n = len(tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=True, add_generation_prompt=True))
            except Exception:  # noqa: BLE001 - no chat template: fall back to the estimate
                n = _estimate_tokens(messages)
                result.prompt_tokens_estimated = True
        else:
            n = _estimate_tokens(messages)
            result.prompt_tokens_estimated = True
        if n > longest:
            longest, longest_id = n, seed_id
    result.longest_prompt_tokens = longest
    how = "about " if result.prompt_tokens_estimated else ""
    max_input = window.get("max_input_tokens")
    if max_input is not None and longest > max_input:
        raise ValueError(
            f"the longest prompt (seed {longest_id}: {how}{longest} tokens) exceeds the server's max_input_tokens="
            f"{max_input}: shorten the seeds or the prompt template, or serve the model with a larger context"
        )
    max_total = window.get("max_total_tokens")
    if max_total is not None and longest + result.max_new_tokens > max_total:
        capped = max_total - longest
        quality = config.quality
        floor = max(1, int(getattr(quality, "min_context_words", 0) or 0))
        if capped < floor:
            raise ValueError(
                f"the longest prompt (seed {longest_id}: {how}{longest} tokens) leaves {capped} of the server's "
                f"max_total_tokens={max_total} for the output, fewer than needed ({floor}); "
                "serve the model with a larger context or shorten the prompts"
            )
        message = (
            f"max_new_tokens={result.max_new_tokens} + the longest prompt ({how}{longest} tokens, seed {longest_id}) "
            f"exceeds the server's max_total_tokens={max_total}: capping max_new_tokens at {capped}"
        )
        logger.warning(message)
        result.warnings.append(message)
        result.max_new_tokens = capped
    return result


def check_endpoints(config: Any, *, step: str = "synthesize") -> str:
    """Before a run: the generation endpoint(s) of ``config`` answer, accept the credentials and name
    the served model (:func:`run_preflight`'s endpoint checks, without prompts or tokenizer; no
    generation request is sent). Returns the model id. Raises
    :class:`~hf_context_synthesis.synthesis.plan.RunSetupError`, ``step`` in front of the reason: unreachable
    (naming the URL), credentials refused, or the served model cannot be told."""
    from .backend import make_backend
    from ..backends.base import run_coro

    probe_config = dataclasses.replace(config, api="chat", tokenizer=None)  # no tokenizer needed to probe
    backend = make_backend(probe_config)

    async def probe() -> str:
        try:
            return (await run_preflight(probe_config, backend, lambda: ())).model_id
        finally:
            await backend.aclose()

    try:
        return run_coro(probe())
    except (OSError, ValueError) as err:
        from ..utils.checks import RunSetupError

        raise RunSetupError(f"{step}: {err}") from None


def _context_window(info: dict[str, Any]) -> dict[str, int]:
    out = {}
    for key, aliases in (("max_input_tokens", ("max_input_tokens", "max_input_length")), ("max_total_tokens", ("max_total_tokens",))):
        for alias in aliases:
            value = info.get(alias)
            if isinstance(value, int) and value > 0:
                out[key] = value
                break
    return out


__all__ += ["check_endpoints", "check_writable", "EndpointUnreachableError", "ModelDiscoveryError"]
