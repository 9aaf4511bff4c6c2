"""The ``context_synthesis`` dataset builder that ``load_dataset("context_synthesis", ...)`` resolves.

Every :class:`~hf_context_synthesis.SynthesisConfig` field is a config kwarg::

    import hf_context_synthesis  # registers "context_synthesis" with datasets.load_dataset
    ds = load_dataset("context_synthesis", seed="data/seeds/", endpoint="http://tgi:8080", split="train")

The cache id is the config's semantic fingerprint (seed contents, generator, prompt, sampling and
composition settings, ``random_seed``): tokens, endpoints URLs, timeouts and concurrency do not
change it, and passing a default explicitly hits the same cache as leaving it out.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import datasets

from hf_context_synthesis.config import SynthesisConfig
from hf_context_synthesis.schema import ROW_FEATURES

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
    return SynthesisConfig(**{name: getattr(self, name) for name in _SYNTHESIS_FIELDS})


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

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="Long-context instruction data synthesized by context synthesis (arXiv 2502.15592).",
            features=ROW_FEATURES,
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        # The generation phase runs here rather than in _generate_examples so that configuration and
        # endpoint errors reach the user as they are, not wrapped in a DatasetGenerationError.
        from hf_context_synthesis.pipeline import synthesize_rows

        config = self.config.to_synthesis_config()
        self._synthesis = (config, *synthesize_rows(config, datasets_cache_dir=self._cache_dir_root))
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={})]

    def _generate_examples(self) -> Any:
        config, rows, report = self._synthesis
        for idx, row in enumerate(rows):
            yield idx, row
        report_json = report.to_json()
        self.info.description = (
            "Long-context instruction data synthesized by context synthesis (arXiv 2502.15592).\n\n"
            f"Synthesis report:\n{report_json}\n\nSettings:\n{json.dumps(config.to_dict(), indent=2, default=str)}"
        )
        report_dir = os.path.join(self._cache_dir_root, "context_synthesis", "reports")
        os.makedirs(report_dir, exist_ok=True)
        with open(os.path.join(report_dir, f"{self.config_id}.json"), "w", encoding="utf-8") as fh:
            fh.write(report_json)
