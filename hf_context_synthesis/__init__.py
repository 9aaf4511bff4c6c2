"""hf-context-synthesis: long-context instruction data by context synthesis (arXiv 2502.15592).

Importing the package registers ``load_dataset("context_synthesis", ...)``. Heavy parts (torch,
transformers, TRL) load only when their names are first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it (loaded lazily)
_LAZY = {
    "SynthesisConfig": "config",
    "DEFAULT_GENERATOR_MODEL": "config",
    "SynthesisReport": "report",
    "ROW_FEATURES": "schema",
    "SeedExample": "seeds",
    "SeedError": "seeds",
    "load_seeds": "seeds",
    "GenerationCache": "cache",
    "CacheCorruptedError": "cache",
    "CacheWriteError": "cache",
    "OutputBusyError": "output",
    "PromptTemplateError": "prompts",
    "SecretFilter": "secrecy",
    "ContextSynthesizer": "synthesis",
    "SynthesisResult": "synthesis",
    "compose_examples": "composition",
    "synthesize_rows": "pipeline",
    "synthesize_to_directory": "output",
    "render_synthesis_messages": "prompts",
    "parse_context": "prompts",
    "LONGBENCH_TEMPLATES": "task_templates",
    "GenerationBackend": "backends.base",
    "GenerationRequest": "backends.base",
    "GenerationResult": "backends.base",
    "make_backend": "backends",
    "TransformersBackend": "backends.local",
    "TGIBackend": "backends.tgi",
    "TGIBackendConfig": "backends.tgi",
    "sanitize_url": "urls",
    "synthesize_shard": "sharding",
    "merge_shards": "sharding",
    "evaluate_longbench": "evaluation",
    "EvalReport": "evaluation",
    "resolve_data": "longbench",
    "PROMPT_BUDGETS": "longbench",
    "evaluate_longbench_v2": "longbench_v2",
    "V2Report": "longbench_v2",
    "qa_f1_score": "metrics",
    "rouge_score": "metrics",
    "select_by_context_dependence": "context_dependence",
    "context_dependence_scores": "context_dependence",
    "make_needle_dataset": "needles",
    "synthesize_instructions": "instruction_synthesis",
    "parse_question_answer": "instruction_synthesis",
    "FleetBackend": "backends.fleet",
    "NoHealthyEndpointError": "backends.fleet",
    "EndpointUnreachableError": "backends.errors",
    "EndpointRouteError": "backends.errors",
    "ModelDiscoveryError": "backends.errors",
    "run_preflight": "preflight",
    "resolve_generator_model": "preflight",
    "AdaptiveLimiter": "backends.adaptive",
    "QualityConfig": "quality",
    "validate_generation": "quality",
    "PackingConfig": "packing",
    "PackingStats": "packing",
    "prepare_packed_dataset": "packing",
    "get_packing_stats": "packing",
    "PackedDataCollator": "packing",
    "longalign_loss": "packing",
    "arrange_rows": "packing",
    "balance_report": "packing",
    "register_packed_sdpa": "attention",
    "fit_row_to_length": "truncation",
    "TrainingJobArguments": "training",
    "ContextSynthesisSFTTrainer": "training",
    "default_sft_config": "training",
    "build_trainer": "training",
    "train": "training",
    "push_dataset_to_hub": "hub",
    "push_model_to_hub": "hub",
    "HubPublishError": "hub",
    "render_dataset_card": "cards",
    "render_model_card": "cards",
    "RecipeConfig": "recipe",
    "load_recipe": "recipe",
    "run_recipe": "recipe",
    "plan_synthesis": "dry_run",
    "RunSetupError": "dry_run",
    "write_dataset_card": "artifacts",
    "write_model_card": "artifacts",
    "add_dataclass_arguments": "cli_args",
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


from .registration import register as _register  # noqa: E402

_register()

from .secrecy import install_log_redaction as _install_log_redaction  # noqa: E402

_install_log_redaction()  # every token in play is redacted from the library's log records
