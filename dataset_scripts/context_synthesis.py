"""The ``context_synthesis`` dataset builder that ``load_dataset("context_synthesis", ...)`` resolves.

Every :class:`~hf_context_synthesis.SynthesisConfig` field is a config kwarg::

    import hf_context_synthesis  # registers "context_synthesis" with datasets.load_dataset
    ds = load_dataset("context_synthesis", seed="data/seeds/", endpoint="http://tgi:8080", split="train")

The endpoint's bearer token is ``endpoint_token=``: ``load_dataset`` consumes ``token=`` itself as the
Hugging Face Hub token, and it is never sent to the endpoint (``endpoint_token=True`` does that on
purpose). Every token in play is redacted from the report, ``info.description`` and the logs.

The cache id is the config's semantic fingerprint (seed contents, generator, prompt, sampling and
composition settings, ``random_seed``): tokens, endpoints URLs, timeouts and concurrency do not
change it, and passing a default explicitly hits the same cache as leaving it out. With an endpoint
and no ``generator_model`` the generator is the model the server reports serving.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import datasets

from hf_context_synthesis.synthesis.config import SynthesisConfig
from hf_context_synthesis.synthesis.schema import ROW_FEATURES
from hf_context_synthesis.utils.secrecy import redact

logger = logging.getLogger(__name__)

_CITATION = """\
@article{zhu2025generalizing,
  title={Generalizing From Short to Long: Effective Data Synthesis for Long-Context Instruction Tuning},
  author={Zhu, Wenhao and others},
  journal={arXiv preprint arXiv:2502.15592},
  year={2025}
}
"""

_SYNTHESIS_FIELDS = [f.name for f in dataclasses.fields(SynthesisConfig)]


def _builder_config_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    out = []
    for f in dataclasses.fields(SynthesisConfig):
        default = f.default if f.default is not dataclasses.MISSING else None
        out.append((f.name, Any, dataclasses.field(default=default, repr=f.repr)))
    return out


def _create_config_id(self: datasets.BuilderConfig, config_kwargs: dict, custom_features: Any = None) -> str:
    """Cache id from the semantic settings only (see module docstring)."""
    return f"{self.name}-{self.to_synthesis_config().fingerprint()}"


def _to_synthesis_config(self: datasets.BuilderConfig) -> SynthesisConfig:
    config = SynthesisConfig(**{name: getattr(self, name) for name in _SYNTHESIS_FIELDS})
    # With an endpoint and no generator_model, the served model's id (asked once, from /info or
    # /v1/models) stands in for it: the cache id depends on the model, never on the endpoint URL.
    from hf_context_synthesis.synthesis.preflight import resolve_generator_model

    return resolve_generator_model(config)


#: ``BuilderConfig`` holding every :class:`SynthesisConfig` field (generated, so the two never drift).
ContextSynthesisBuilderConfig = dataclasses.make_dataclass(
    "ContextSynthesisBuilderConfig",
    _builder_config_fields(),
    bases=(datasets.BuilderConfig,),
    namespace={
        "create_config_id": _create_config_id,
        "to_synthesis_config": _to_synthesis_config,
        "__module__": __name__,
        "__doc__": "BuilderConfig of the context_synthesis builder: the fields of SynthesisConfig.",
    },
)


class ContextSynthesis(datasets.GeneratorBasedBuilder):
    """Synthesizes long-context SFT examples from seed instruction-answer pairs (arXiv 2502.15592)."""

    BUILDER_CONFIG_CLASS = ContextSynthesisBuilderConfig
    VERSION = datasets.Version("0.1.0")
    #: Rows per Arrow write. A composed row holds ten ~2,000-word documents (~150 KB); datasets'
    #: default of 1,000 rows held ~150 MB of rows in memory before each write.
    DEFAULT_WRITER_BATCH_SIZE = 64

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="Long-context instruction data synthesized by context synthesis (arXiv 2502.15592).",
            features=ROW_FEATURES,
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        # The generation phase runs here rather than in _generate_examples so that configuration and
        # endpoint errors reach the user as they are, not wrapped in a DatasetGenerationError.
        from hf_context_synthesis.synthesis.pipeline import synthesize_rows

        config = self.config.to_synthesis_config()
        if self.token and config.endpoints and config.endpoint_token is None:
            logger.warning(
                "load_dataset's token= is the Hugging Face Hub token and is not sent to the endpoint; "
                "pass endpoint_token='...' for the endpoint's own token (endpoint_token=True sends the Hub token)"
            )
        self._synthesis = (config, *synthesize_rows(config, datasets_cache_dir=self._cache_dir_root))
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={})]

    def _generate_examples(self) -> Any:
        config, rows, report = self._synthesis
        for idx, row in enumerate(rows):
            yield idx, row
        report_json = redact(report.to_json())  # a server may echo a credential in an error message
        self.info.description = (
            "Long-context instruction data synthesized by context synthesis (arXiv 2502.15592).\n\n"
            f"Synthesis report:\n{report_json}\n\n"
            f"Settings:\n{redact(json.dumps(config.to_dict(), indent=2, default=str))}"
        )
        report_dir = os.path.join(self._cache_dir_root, "context_synthesis", "reports")
        os.makedirs(report_dir, exist_ok=True)
        with open(os.path.join(report_dir, f"{self.config_id}.json"), "w", encoding="utf-8") as fh:
            fh.write(report_json)
