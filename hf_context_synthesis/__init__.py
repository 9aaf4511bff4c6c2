"""hf-context-synthesis: long-context instruction data by context synthesis (arXiv 2502.15592).

Importing the package registers ``load_dataset("context_synthesis", ...)``. Heavy parts (torch,
transformers, TRL) load only when their names are first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

# name -> module that defines it (loaded lazily)
_LAZY = {
    "SynthesisConfig": "synthesis.config",
    "DEFAULT_GENERATOR_MODEL": "synthesis.config",
    "SynthesisReport": "synthesis.report",
    "ROW_FEATURES": "synthesis.schema",
    "SeedExample": "synthesis.seeds",
    "SeedError": "synthesis.seeds",
    "load_seeds": "synthesis.seeds",
    "GenerationCache": "synthesis.cache",
    "CacheCorruptedError": "synthesis.cache",
    "CacheWriteError": "synthesis.cache",
    "OutputBusyError": "synthesis.output",
    "PromptTemplateError": "synthesis.prompts",
    "SecretFilter": "utils.secrecy",
    "ContextSynthesizer": "synthesis.generation",
    "SynthesisResult": "synthesis.generation",
    "compose_examples": "synthesis.composition",
    "synthesize_rows": "synthesis.pipeline",
    "synthesize_to_directory": "synthesis.output",
    "render_synthesis_messages": "synthesis.prompts",
    "parse_context": "synthesis.prompts",
    "LONGBENCH_TEMPLATES": "synthesis.task_templates",
    "GenerationBackend": "backends.base",
    "GenerationRequest": "backends.base",
    "GenerationResult": "backends.base",
    "make_backend": "synthesis.backend",
    "TransformersBackend": "backends.local",
    "TGIBackend": "backends.tgi",
    "TGIBackendConfig": "backends.tgi",
    "sanitize_url": "utils.urls",
    "synthesize_shard": "scale.sharding",
    "merge_shards": "scale.sharding",
    "evaluate_longbench": "evaluation.longbench_v1",
    "EvalReport": "evaluation.longbench_v1",
    "resolve_data": "evaluation.longbench_tasks",
    "PROMPT_BUDGETS": "evaluation.longbench_tasks",
    "evaluate_longbench_v2": "evaluation.longbench_v2",
    "V2Report": "evaluation.longbench_v2",
    "qa_f1_score": "evaluation.metrics",
    "rouge_score": "evaluation.metrics",
    "select_by_context_dependence": "evaluation.context_dependence",
    "context_dependence_scores": "evaluation.context_dependence",
    "make_needle_dataset": "evaluation.needles",
    "synthesize_instructions": "synthesis.instructions",
    "parse_question_answer": "synthesis.instructions",
    "FleetBackend": "backends.fleet",
    "NoHealthyEndpointError": "backends.fleet",
    "EndpointUnreachableError": "backends.errors",
    "EndpointRouteError": "backends.errors",
    "ModelDiscoveryError": "backends.errors",
    "run_preflight": "synthesis.preflight",
    "resolve_generator_model": "synthesis.preflight",
    "AdaptiveLimiter": "backends.adaptive",
    "QualityConfig": "synthesis.quality",
    "validate_generation": "synthesis.quality",
    "PackingConfig": "training.packing",
    "PackingStats": "training.packing",
    "prepare_packed_dataset": "training.packing",
    "get_packing_stats": "training.packing",
    "PackedDataCollator": "training.packing",
    "longalign_loss": "training.packing",
    "arrange_rows": "training.packing",
    "balance_report": "training.packing",
    "register_packed_sdpa": "training.attention",
    "fit_row_to_length": "training.truncation",
    "TrainingJobArguments": "training.trainer",
    "ContextSynthesisSFTTrainer": "training.trainer",
    "default_sft_config": "training.trainer",
    "build_trainer": "training.trainer",
    "train": "training.trainer",
    "push_dataset_to_hub": "hub.publish",
    "push_model_to_hub": "hub.publish",
    "HubPublishError": "hub.publish",
    "render_dataset_card": "hub.cards",
    "render_model_card": "hub.cards",
    "RecipeConfig": "recipe",
    "load_recipe": "recipe",
    "run_recipe": "recipe",
    "plan_synthesis": "synthesis.plan",
    "RunSetupError": "synthesis.plan",
    "write_dataset_card": "hub.artifacts",
    "write_model_card": "hub.artifacts",
    "add_dataclass_arguments": "utils.fields",
}

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_context_synthesis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


from .dataset_scripts.registration import register as _register  # noqa: E402

_register()

from .utils.secrecy import install_log_redaction as _install_log_redaction  # noqa: E402

_install_log_redaction()  # every token in play is redacted from the library's log records
