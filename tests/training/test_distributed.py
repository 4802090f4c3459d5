"""The semi-supervised trainers' DDP logic on CPU with the gloo backend and two processes (nnU-Net's own DDP
path needs GPUs): batch split, unannotated shards, one identical teacher and one identical EN / UDA
adversary on every rank, through the trainers' own train steps."""
from __future__ import annotations

import faulthandler
import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bare_trainer import bare_trainer, batches
from nnunet_mt.training.distributed import shard, split_batch_size


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


def _gather_equal(tensor: torch.Tensor, world: int) -> bool:
    gathered = [None] * world
    dist.all_gather_object(gathered, tensor)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


def _train_on_two_ranks(name: str, rank: int, world: int) -> dict:
    """Three steps of trainer ``name``'s own train_step on this rank; what rank 0 reports about them."""
    t = bare_trainer(name, ddp=True, rank=rank)
    annotated, t.dataloader_unlabeled = batches(100 + rank, 3)  # each rank its own patches
    result = {}
    is_teacher = name.startswith("nnUNetTrainerMeanTeacher")
    if is_teacher:
        t._on_fresh_start()  # the teacher: a copy of the (loaded) student
        model = t.teacher
    else:
        torch.manual_seed(1 + rank)  # without the broadcast each rank would start its own adversary
        t._set_up_adversary()
        model = t.adversary
    start = _flat(model.parameters())
    buffers_differed = False
    for batch in annotated:
        out = type(t).train_step(t, batch)  # the trainer's own step
        if is_teacher:
            # the student's BatchNorm statistics came from different batches on each rank
            buffers_differed |= not _gather_equal(_flat(t.plain_network().buffers()), world)
    result["steps"] = t.global_step
    result["loss_finite"] = bool(torch.isfinite(torch.as_tensor(out["loss"])))
    result["params_equal"] = _gather_equal(_flat(model.parameters()), world)
    result["buffers_equal"] = _gather_equal(_flat(model.buffers()), world) if list(model.buffers()) else True
    result["buffers_differed_before_sync"] = buffers_differed
    result["moved"] = bool((_flat(model.parameters()) != start).any())
    if not is_teacher:
        result["adam_equal"] = _gather_equal(torch.cat([s["exp_avg"].flatten() for s in
                                                        t.adversary_optimizer.state.values()]), world)
    return result


TRAINERS = ("nnUNetTrainerMeanTeacher_tiny", "nnUNetTrainerDeepMedicEN_tiny", "nnUNetTrainerDeepMedicUDA_tiny")


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    # a crash in C++ (SIGABRT, SIGSEGV) leaves no Python traceback for spawn to report: dump every thread's
    with open(f"{out_dir}/faults_rank{rank}.txt", "w") as faults:
        faulthandler.enable(faults, all_threads=True)
        torch.set_num_threads(1)  # two processes on few cores: threads would only compete
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
        results = {name: _train_on_two_ranks(name, rank, world) for name in TRAINERS}
        if rank == 0:
            with open(f"{out_dir}/result.json", "w") as f:
                json.dump(results, f)
        dist.destroy_process_group()
        faulthandler.disable()
    # The work is done and reported. Skip the interpreter's teardown: once (CI, a loaded machine) a rank
    # died there by SIGABRT ("terminate called without an active exception", a C++ thread still joinable
    # while torch's and gloo's statics are destroyed), which fails the test for nothing it checks.
    os._exit(0)


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> dict:
    """Every trainer of TRAINERS trained for 3 steps on 2 gloo ranks (one spawn: imports are the cost)."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    try:
        mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    except mp.ProcessExitedException as crash:
        dumps = "\n".join(f"--- {f.name}\n{f.read_text()}" for f in sorted(Path(tmp_path).glob("faults_rank*.txt")))
        raise AssertionError(f"a rank crashed: {crash}\nits threads when it did:\n{dumps}") from crash
    return json.loads((tmp_path / "result.json").read_text())


def test_every_rank_holds_the_same_teacher(ddp_results):
    result = ddp_results["nnUNetTrainerMeanTeacher_tiny"]
    assert result["steps"] == 3 and result["loss_finite"]
    assert result["params_equal"], "EMA of the DDP-synchronised student must agree on every rank"
    assert result["buffers_differed_before_sync"], "per-rank BatchNorm statistics differ before averaging"
    assert result["buffers_equal"], "the trainer's average_buffers must leave one set of statistics"
    assert result["moved"], "the teacher must have moved from the student it started as"


@pytest.mark.parametrize("name", ["nnUNetTrainerDeepMedicEN_tiny", "nnUNetTrainerDeepMedicUDA_tiny"])
def test_every_rank_holds_the_same_adversary(ddp_results, name):
    """Rank 0's adversary is the one saved, so every rank must train that one."""
    result = ddp_results[name]
    assert result["steps"] == 3 and result["loss_finite"]
    assert result["params_equal"] and result["adam_equal"]
    assert result["moved"]
