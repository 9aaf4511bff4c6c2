"""The accelerate configs in examples/accelerate/ (DeepSpeed ZeRO-3, FSDP2) parse with accelerate's own loader."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("accelerate")
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file  # noqa: E402
from accelerate.utils import DistributedType  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "accelerate"


def test_deepspeed_zero3_config_parses():
    config = load_config_from_file(str(CONFIGS / "deepspeed_zero3.yaml"))  # unknown keys raise
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == DistributedType.DEEPSPEED and config.num_processes == 8
    assert config.deepspeed_config["zero_stage"] == 3 and config.deepspeed_config["zero3_init_flag"] is True
    assert str(config.mixed_precision) == "bf16" and config.use_cpu is False


def test_fsdp2_config_parses():
    config = load_config_from_file(str(CONFIGS / "fsdp2.yaml"))
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == DistributedType.FSDP and config.num_processes == 8
    assert config.fsdp_config["fsdp_version"] == 2
    assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_a_misspelt_key_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "fsdp2.yaml").read_text().replace("num_machines:", "num_machine:"))
    with pytest.raises((TypeError, ValueError), match="num_machine"):
        load_config_from_file(str(bad))
