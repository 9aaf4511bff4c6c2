"""Run by tests/test_distributed.py under ``accelerate launch --multi_gpu --num_processes 2`` (gloo on CPU).

Trains through ``context-synthesis train`` (TRL flag names) with ``build_trainer`` wrapped so that a
forward pre-hook records, per rank, the tokens of every training forward; each rank writes
``<record_dir>/rank<r>.json`` with its batches and the world size it ran with.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    model, data, out, record_dir = sys.argv[1:5]
    extra = sys.argv[5:]
    import hf_context_synthesis.training.trainer as training
    from hf_context_synthesis.cli import main as cli_main

    batches: list[dict] = []
    original = training.build_trainer

    def recording_build_trainer(*args, **kwargs):
        trainer = original(*args, **kwargs)

        def hook(module, a, kw):
            if module.training:
                ids = kw.get("input_ids", a[0] if a else None)
                pos = kw.get("position_ids")
                batches.append({"input_ids": ids[0].tolist(), "position_ids": pos[0].tolist()})

        trainer.model.register_forward_pre_hook(hook, with_kwargs=True)
        return trainer

    training.build_trainer = recording_build_trainer
    rc = cli_main(
        ["train", "--model_name_or_path", model, "--dataset_name", data, "--output_dir", out, *extra]
    )
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    with open(os.path.join(record_dir, f"rank{rank}.json"), "w", encoding="utf-8") as fh:
        json.dump({"rank": rank, "world_size": world, "batches": batches, "rc": rc}, fh)
    return rc


if __name__ == "__main__":
    sys.exit(main())
