"""The mean teacher's DDP logic on CPU with the gloo backend and two processes (nnU-Net's own DDP path
needs GPUs): batch split, unannotated shards, and one identical teacher on every rank."""
from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nnunet_mt.architectures.deepmedic import DeepMedic
from nnunet_mt.training.distributed import average_buffers, shard, split_batch_size
from nnunet_mt.training.mean_teacher import (apply_input_noise, draw_input_noise, ema_update, make_teacher,
                                             set_teacher_forward_mode, soft_dice_consistency)


def test_batch_split_matches_nnunet():
    # nnU-Net gives the first (global % world) ranks one extra sample
    assert [split_batch_size(8, 2, r) for r in range(2)] == [4, 4]
    assert [split_batch_size(8, 3, r) for r in range(3)] == [3, 3, 2]
    with pytest.raises(ValueError, match="batch of 2 cannot be split over 3"):
        split_batch_size(2, 3, 0)


def test_shards_are_disjoint_and_cover_all_cases():
    cases = [f"u{i}" for i in range(7)]
    shards = [shard(cases, 3, r) for r in range(3)]
    assert sorted(sum(shards, [])) == sorted(cases)
    assert shards[0] == ["u0", "u3", "u6"]
    with pytest.raises(ValueError, match="2 unannotated scans cannot be shared by 3 ranks"):
        shard(["a", "b"], 3, 0)


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().float().flatten() for t in tensors])


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)  # same initial weights everywhere, as nnU-Net's checkpoint loading gives
    student = DeepMedic(2, 2, filters=(4,) * 8, fc_filters=(8, 8))
    ddp = torch.nn.parallel.DistributedDataParallel(student)
    teacher = make_teacher(student)
    opt = torch.optim.RMSprop(ddp.parameters(), lr=1e-3, alpha=0.9)
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own annotated + unannotated data
    buffers_differed = False
    for step in range(3):
        x_l, x_u = torch.randn(2, 2, 51, 51, 51, generator=g), torch.randn(2, 2, 51, 51, 51, generator=g)
        y = torch.randint(0, 2, (2, 3, 3, 3), generator=g)
        x_s = apply_input_noise(x_u, *draw_input_noise(x_u.shape, generator=g))
        x_t = apply_input_noise(x_u, *draw_input_noise(x_u.shape, generator=g))
        out = ddp(torch.cat([x_l, x_s]))
        with torch.no_grad():
            target = set_teacher_forward_mode(teacher)(x_t)
        loss = torch.nn.functional.cross_entropy(out[:2], y) + soft_dice_consistency(
            torch.softmax(out[2:], 1), torch.softmax(target, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema_update(teacher, student, 0.99, buffers="ema")
        gathered = [torch.zeros(0)] * world
        dist.all_gather_object(gathered, _flat(teacher.buffers()))
        buffers_differed |= not torch.equal(gathered[0], gathered[1])
        average_buffers(teacher)
    params = [None] * world
    buffers = [None] * world
    dist.all_gather_object(params, _flat(teacher.parameters()))
    dist.all_gather_object(buffers, _flat(teacher.buffers()))
    if rank == 0:
        result = {"params_equal": torch.equal(params[0], params[1]), "buffers_equal": torch.equal(buffers[0], buffers[1]),
                  "buffers_differed_before_sync": buffers_differed,
                  "teacher_moved": bool((_flat(teacher.parameters()) != _flat(DeepMedic(2, 2, filters=(4,) * 8,
                                                                                       fc_filters=(8, 8)).parameters())).any())}
        with open(f"{out_dir}/result.json", "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()


def test_every_rank_holds_the_same_teacher(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["params_equal"], "EMA of the DDP-synchronised student must agree on every rank"
    assert result["buffers_differed_before_sync"], "per-rank BatchNorm statistics differ before averaging"
    assert result["buffers_equal"], "average_buffers must leave one set of statistics"
    assert result["teacher_moved"]
