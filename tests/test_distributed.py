"""DistributedDataParallel on CPU (gloo) under torchrun: the same code path as NCCL on GPUs."""
import os
import socket
import subprocess
import sys

import torch

import data
from conftest import ROOT, read_log, tiny_args

WORKER = os.path.join(ROOT, "tests", "ddp_worker.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*launch, argv=(), background=False, **env):
    cmd = [sys.executable, "-m", "torch.distributed.run", *launch, WORKER, *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **env}
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def assert_same_weights_on_every_rank(out, world):
    states = [torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=True) for r in range(world)]
    for k in states[0]:
        for r in range(1, world):
            assert torch.equal(states[0][k], states[r][k]), f"{k} differs between rank 0 and rank {r}"


def test_each_epoch_is_partitioned_across_ranks_without_duplicates():
    split = data.Split(torch.zeros(103, 3, 4, 4, dtype=torch.uint8), torch.zeros(103, dtype=torch.long), None,
                       torch.device("cpu"), seed=3)
    for world in (1, 2, 3, 4):
        per_rank = [data.TrainBatches(split, 12, r, world, 1, 0).rank_indices(epoch=5) for r in range(world)]
        union = torch.cat(per_rank)
        assert len(union) == len(set(union.tolist())) == 96  # 8 full global batches of 12; 7 images dropped
        assert set(union.tolist()) <= set(range(103))
        assert torch.equal(torch.cat(per_rank).sort().values, split.epoch_order(5)[:96].sort().values)
    b = data.TrainBatches(split, 12, 1, 2, 1, 0)
    assert torch.equal(b.rank_indices(5, start_it=3), b.rank_indices(5)[3 * 6:])  # resuming mid-epoch


def test_two_processes_train_with_identical_weights_and_disjoint_samples(folder, tmp_path):
    out = tmp_path / "ddp"
    r = torchrun("--standalone", "--nproc_per_node=2", argv=tiny_args(folder, out, "--max_steps", "4"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_weights_on_every_rank(out, 2)
    seen = [torch.load(out / f"indices{k}.pt", weights_only=True) for k in range(2)]
    for (e0, _, a), (e1, _, b) in zip(*seen):
        assert e0 == e1 and not set(a.tolist()) & set(b.tolist())
    assert [row["step"] for row in read_log(out) if "loss" in row] == [1, 2, 3, 4]  # rank 0 alone writes
    assert [row["val_images"] for row in read_log(out) if "val_knn_top1" in row] == [8]  # the monitor, on gathered features
    assert "2 process(es)" in r.stdout and "batch 8 global = 2 x 4" in r.stdout


def test_a_global_batch_that_does_not_divide_is_refused(folder, tmp_path):
    r = torchrun("--standalone", "--nproc_per_node=2", argv=tiny_args(folder, tmp_path, "--batch_size", "7"))
    assert r.returncode != 0
    assert "--batch_size 7 (global) does not divide among 2 processes" in r.stderr
    assert not (tmp_path / "checkpoint.pt").exists()


def test_two_node_launch_on_one_machine_trains(folder, tmp_path):
    port, out = free_port(), tmp_path / "nodes"
    launch = ["--nnodes=2", "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}"]
    argv = tiny_args(folder, out, "--max_steps", "3")
    nodes = [torchrun(*launch, f"--node_rank={k}", argv=argv, background=True) for k in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(logs)
    assert_same_weights_on_every_rank(out, 2)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 3


def test_a_killed_worker_is_restarted_by_torchrun_and_the_run_resumes(folder, tmp_path):
    # 24 images, global batch 8: 3 steps per epoch and a checkpoint every epoch. Rank 1 dies before its
    # 5th step; the restarted group resumes from the step-3 checkpoint and finishes at step 7.
    out = tmp_path / "elastic"
    argv = tiny_args(folder, out, "--max_steps", "7", "--save_every", "1")
    r = torchrun("--standalone", "--nproc_per_node=2", "--max-restarts=1",
                 argv=argv, KILL_RANK="1", KILL_STEP="5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming from step 3" in r.stdout
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 7
    assert_same_weights_on_every_rank(out, 2)
