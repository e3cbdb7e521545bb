"""The process group a DDP fit leaves is destroyed before its process exits (ssl_pipeline/heads/teardown.py);
the two-rank fit itself is tests/test_ddp.py, and scripts/ddp_abort_repro.py counts the aborts it prevents."""

from __future__ import annotations

import torch.distributed as dist

from ssl_pipeline.heads.teardown import end_process_group


def test_end_process_group_destroys_the_group_and_is_a_no_op_without_one(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        end_process_group()
        assert not dist.is_initialized()
        end_process_group()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
