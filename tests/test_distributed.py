"""DistributedDataParallel on CPU (gloo) under torchrun: the same code path as NCCL on GPUs."""
import os
import socket
import subprocess
import sys

import pytest
import torch

import aavae
from methods import controls
from util import data
from util import misc
from conftest import MONITOR, ROOT, read_log, tiny_args, write_subset
from test_train import run_error

WORKER = os.path.join(ROOT, "tests", "ddp_worker.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*launch, argv=(), background=False, worker=WORKER, **env):
    cmd = [sys.executable, "-m", "torch.distributed.run", *launch, worker, *argv]
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


def test_a_global_batch_that_does_not_divide_among_the_processes_is_refused(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(aavae, "setup_distributed", lambda: (0, 2, torch.device("cpu")))  # as rank 0 of two
    assert "--batch_size 7 (global) does not divide among 2 processes" in run_error(
        tiny_args(folder, tmp_path, "--batch_size", "7"), capsys)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_each_process_of_a_launcher_that_shows_it_one_gpu_takes_that_one(monkeypatch):
    # srun --gpus-per-task=1 gives every process CUDA_VISIBLE_DEVICES of its own: cuda:0, whatever LOCAL_RANK is
    monkeypatch.setenv("RANK", "3"), monkeypatch.setenv("LOCAL_RANK", "3"), monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setattr(misc.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(misc.torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(misc.torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(misc.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(misc.dist, "get_rank", lambda: 3), monkeypatch.setattr(misc.dist, "get_world_size", lambda: 4)
    assert misc.setup_distributed() == (3, 4, torch.device("cuda", 0))


def test_the_commands_of_methods_train_under_two_process_torchrun_and_simclrs_loss_is_the_global_batchs(folder, tmp_path):
    # One launch trains each in turn in the same process group: every kind of use of the adversarial autoencoder (its
    # phases average their own gradients: no DDP), plain and augmented among them, the IWAE, the supervised control and
    # SimCLR (the AAE as a regulariser: tests/test_cluster.py's two-node run), and each rank ends with the same weights,
    # discriminators included. Before them, each rank computes NT-Xent on its block of one seeded global batch.
    methods = ["supervised_aae", "aa_semi_aae", "cluster_aae", "aa_dimred_aae", "aa_iwae", "supervised",
               "simclr=--max_steps,3," + ",".join(MONITOR)]  # each use once; SimCLR monitored as the autoencoders are
    subset = write_subset(tmp_path / "labelled.txt")
    worker = os.path.join(ROOT, "tests", "methods_worker.py")
    p = torchrun("--nproc_per_node=2", f"--master_port={free_port()}", worker=worker,
                 argv=[str(tmp_path), folder, str(subset), *methods])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    for method in (m.split("=")[0] for m in methods):
        ranks = [torch.load(tmp_path / method / f"rank{r}.pt", weights_only=True) for r in range(2)]
        assert ranks[0].keys() == ranks[1].keys() and any(k.startswith("extra.") for k in ranks[0]) == ("aae" in method)
        for k in ranks[0]:
            assert torch.equal(ranks[0][k], ranks[1][k]), (method, k)
        assert [r["step"] for r in read_log(tmp_path / method) if "loss" in r] == ([1, 2, 3] if method == "simclr" else [1])
    assert p.stdout.count("batch 8 global = 2 x 4") == len(methods)
    assert any("val_knn_top1" in row and "val_sim_same" in row for row in read_log(tmp_path / "simclr"))
    # SimCLR's loss: each rank's is the mean over its anchors, and the mean of the two is the global batch's
    z1, z2 = (z.clone().requires_grad_() for z in torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(0)))
    loss = controls.nt_xent_loss(z1, z2, 0.5)
    loss.backward()
    ranks = [torch.load(tmp_path / "ntxent" / f"loss{k}.pt", weights_only=True) for k in range(2)]
    assert ((ranks[0]["loss"] + ranks[1]["loss"]) / 2).item() == pytest.approx(loss.item(), rel=1e-6)
    # each rank's gradients reach its own rows from both ranks' losses: DDP's average, / 2, is the global gradient
    for k, grad in ((1, z1.grad), (2, z2.grad)):
        assert torch.allclose(torch.cat([ranks[0][f"grad{k}"], ranks[1][f"grad{k}"]]) / 2, grad, atol=1e-6)
