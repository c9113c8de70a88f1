"""What a run on a cluster needs: a scheduler's SIGTERM saves the current step, time-based checkpoints, a
resume that needs no shared filesystem, one download per node, random streams that never coincide, and a
log in which every step appears once."""
import itertools
import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

import aavae
from methods import clustering
from util import misc
from conftest import MONITOR, ROOT, read_log, setup_run, tiny_args
from test_distributed import assert_same_weights_on_every_rank, free_port, torchrun
from test_linear_eval import colour_folder, probe_args
from test_train import tensors_of


def assert_same_checkpoints(a, b):
    a, b = tensors_of(a / "checkpoint.pt"), tensors_of(b / "checkpoint.pt")
    assert a.keys() == b.keys() and len(a) > 100
    for k in a:
        assert torch.equal(a[k], b[k]), k


def signal_after(monkeypatch, n, signum=signal.SIGTERM):
    """The process sends itself signum after its n-th training step, as a scheduler would mid-epoch."""
    real, calls = aavae.train_step, []

    def step(*a, **k):
        out = real(*a, **k)
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(aavae, "train_step", step)


def test_a_signal_mid_epoch_saves_that_step_and_the_rerun_ends_bit_identical(folder, tmp_path, monkeypatch, capsys):
    # 24 images, batch 8: 3 steps per epoch, so step 5 is inside epoch 2; the epoch checkpoints are every 10 epochs.
    # SIGTERM and SIGUSR1, each in a run of its own, against the one uninterrupted run.
    aavae.main(tiny_args(folder, tmp_path / "straight", "--max_steps", "7"))
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        run = tmp_path / signal.Signals(signum).name
        signal_after(monkeypatch, 5, signum)
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            aavae.main(tiny_args(folder, run, "--max_steps", "7"))
        assert e.value.code == misc.EXIT_PREEMPTED == 3
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"stopped by {signal.Signals(signum).name} after step 5" in err[0]
        assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 5
        assert signal.getsignal(signum) is signal.SIG_DFL  # the handler is the run's only while it trains
        monkeypatch.undo()
        aavae.main(tiny_args(folder, run, "--max_steps", "7"))
        assert_same_checkpoints(tmp_path / "straight", run)
        assert [r["step"] for r in read_log(run) if "loss" in r] == list(range(1, 8))


def test_save_every_minutes_checkpoints_mid_epoch(folder, tmp_path, monkeypatch):
    saved = []
    real = aavae.save_checkpoint
    monkeypatch.setattr(aavae, "save_checkpoint", lambda *a: saved.append(a[4]) or real(*a))
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "5", "--save_every_minutes", "1e-9"))
    assert saved == [1, 2, 3, 4, 5]  # due after every step; the epoch ends at step 3


def test_a_crash_after_the_checkpoint_leaves_each_step_once_in_the_log(folder, tmp_path, monkeypatch):
    real, calls = aavae.train_step, []

    def crashing(*a, **k):
        calls.append(1)
        if len(calls) == 6:  # steps 4 and 5 were logged after the step-3 checkpoint
            raise RuntimeError("node lost")
        return real(*a, **k)

    monkeypatch.setattr(aavae, "train_step", crashing)
    with pytest.raises(RuntimeError, match="node lost"):
        aavae.main(tiny_args(folder, tmp_path, "--max_steps", "7", "--save_every", "1"))
    assert [r["step"] for r in read_log(tmp_path) if "loss" in r] == [1, 2, 3, 4, 5]
    monkeypatch.undo()
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "7", "--save_every", "1"))
    assert [r["step"] for r in read_log(tmp_path) if "loss" in r] == list(range(1, 8))


def test_cudnn_picks_the_fastest_algorithms_unless_the_run_is_deterministic(folder, tmp_path, monkeypatch):
    seen, real = [], aavae.train_step
    monkeypatch.setattr(aavae, "train_step", lambda *a: seen.append((torch.backends.cudnn.benchmark,
                                                                    torch.are_deterministic_algorithms_enabled())) or real(*a))
    aavae.main(tiny_args(folder, tmp_path / "fast", "--max_steps", "1"))
    aavae.main(tiny_args(folder, tmp_path / "exact", "--max_steps", "1", "--deterministic"))
    assert seen == [(True, False), (False, True)]
    assert json.loads((tmp_path / "exact" / "args.json").read_text())["deterministic"] is True
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark  # restored after


def test_two_nodes_train_as_one_node_of_two_and_a_killed_worker_restarts_the_group_without_a_shared_directory(
        folder, tmp_path):
    # 1. Two torchrun agents of one process each, as on two machines, train 7 steps: identical weights on both ranks,
    #    disjoint samples, one log; the AA-AAE's discriminator is a second DDP model. Rank 0 alone writes; the monitor
    #    scores features gathered from both ranks. The same 7 steps then run on one node of two processes (3 steps an
    #    epoch), where rank 1 writes nothing and reads nothing: its --output_dir is a private, empty directory.
    # 2. With --save_every_minutes due after every step (on rank 0's clock), rank 1 is SIGKILLed before its 3rd
    #    step: torchrun restarts the group, which resumes from the step-2 checkpoint, mid-epoch (rank 1 from rank
    #    0's checkpoint). 3. In that attempt rank 1 alone gets SIGTERM after its 2nd step, step 4: the ranks read
    #    each other's flags a step later and both stop after step 5, with no restart left. 4. A re-run ends with
    #    the two nodes' weights, and the log has each step once.
    port, nodes_out = free_port(), tmp_path / "nodes"
    launch = ["--nnodes=2", "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}"]
    argv = tiny_args(folder, nodes_out, "--method", "aa_aae", "--max_steps", "7", *MONITOR)
    nodes = [torchrun(*launch, f"--node_rank={k}", argv=argv, background=True) for k in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(logs)
    assert_same_weights_on_every_rank(nodes_out, 2)
    seen = [torch.load(nodes_out / f"indices{k}.pt", weights_only=True) for k in range(2)]
    for (e0, _, a), (e1, _, b) in zip(*seen):
        assert e0 == e1 and not set(a.tolist()) & set(b.tolist())
    assert [row["step"] for row in read_log(nodes_out) if "loss" in row] == list(range(1, 8))
    assert {row["val_images"] for row in read_log(nodes_out) if "val_knn_top1" in row} == {8}
    assert "2 process(es)" in logs[0] and "batch 8 global = 2 x 4" in logs[0]
    assert torch.load(nodes_out / "checkpoint.pt", weights_only=True)["step"] == 7
    # each rank decoded half of the folder, and the gathered halves are the folder a single process decodes
    alone = aavae.load_data(setup_run(argv)[0], torch.device("cpu"))[0].images
    assert all(torch.equal(torch.load(nodes_out / f"images{k}.pt", weights_only=True), alone) for k in range(2))
    # the ranks agree on saving and stopping through the training group: no side group of another backend; and each
    # rank keeps torchrun's one thread (OMP_NUM_THREADS), also where pytest runs without workers of its own
    ranks = [json.loads((nodes_out / f"groups{k}.json").read_text()) for k in range(2)]
    assert all(r["groups"] in ([], [None]) and r["threads"] == 1 for r in ranks), ranks

    launch = ("--standalone", "--nproc_per_node=2")
    argv = tiny_args(folder, tmp_path / "split", "--method", "aa_aae", "--max_steps", "7")
    stopped = torchrun(*launch, "--max-restarts=1", argv=argv + ["--save_every_minutes", "1e-9"], KILL_RANK="1",
                       KILL_STEP="3", SIGNAL_RANK="1", SIGNAL_STEP="2", SIGNAL_ATTEMPT="1", PRIVATE_DIR_RANK="1")
    assert stopped.returncode != 0 and "resuming from step 2" in stopped.stdout, stopped.stdout + stopped.stderr
    assert "stopped by SIGTERM after step 5" in stopped.stderr and "a signal to another rank after step 5" in stopped.stderr
    assert torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["step"] == 5
    resumed = torchrun(*launch, argv=argv, PRIVATE_DIR_RANK="1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from step 5" in resumed.stdout
    assert not os.path.exists(tmp_path / "split-rank1" / "checkpoint.pt")
    assert_same_weights_on_every_rank(tmp_path / "split", 2)
    for k, v in torch.load(nodes_out / "rank1.pt", weights_only=True).items():
        assert torch.equal(v, torch.load(tmp_path / "split" / "rank1.pt", weights_only=True)[k]), k
    assert [r["step"] for r in read_log(tmp_path / "split") if "loss" in r] == list(range(1, 8))


def test_under_torchrun_one_rank_per_node_downloads_finetuning_scores_with_rank_zeros_statistics_and_knn_each_image_once(
        tmp_path):
    # One launch: first the download (one rank per node downloads while the others wait longer than the group's
    # timeout), then the evaluations.
    (tmp_path / "download").mkdir()
    data = colour_folder(tmp_path / "data")
    args = lambda out, *a: probe_args(data, tmp_path / out, "--random_init", "--encoder", "resnet18", *a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "tests", "probe_worker.py"), "--download", str(tmp_path / "download"),
           *args("ft", "--mode", "finetune", "--label_fraction", "1", "--epochs", "1", "--batch_size", "8"), "--then",
           *args("knn", "--mode", "knn", "--knn_k", "5", "--batch_size", "6"), "--then",
           *args("kmeans", "--mode", "cluster", "--restarts", "2", "--batch_size", "6")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    calls = [json.loads((tmp_path / "download" / f"rank{k}.json").read_text()) for k in range(2)]
    assert calls[0] == ["downloaded"] and calls[1] == ["found"]
    stats = [torch.load(tmp_path / "ft" / f"bn{k}.pt", weights_only=True) for k in range(2)]
    saved = torch.load(tmp_path / "ft" / "probe_checkpoint.pt", weights_only=True)["model"]
    assert len(stats[0]) > 20
    for k, v in stats[0].items():
        assert torch.equal(v, stats[1][k]) and torch.equal(v, saved[k]), k
    result = json.loads((tmp_path / "knn" / "result.json").read_text())
    assert result["test_images"] == 14 and result["top1"] >= 90  # 14 test images, 7 a rank: each once
    ft = json.loads((tmp_path / "ft" / "result.json").read_text())  # every image's hit, gathered in the split's order
    assert len(ft["correct"]) == 14 and 100 * sum(ft["correct"]) / 14 == pytest.approx(ft["top1"])
    single = clustering.main(args("kmeans1", "--mode", "cluster", "--restarts", "2", "--batch_size", "6"))
    both = json.loads((tmp_path / "kmeans" / "result.json").read_text())
    assert both["test_clusters"] == single["test_clusters"] and both["correct"] == single["correct"]


# The random streams of the code, by name, with the number of integer keys each is drawn with.
STREAMS = {"order": 2, "folder_crops": 3, "crops": 3, "step": 3, "val_subset": 0, "val_crops": 3, "val_noise": 3,
           "probe_crops": 3, "probe_view": 3, "score": 3, "features": 3, "similarity_crops": 2, "similarity": 1,
           "monitor_bank": 1, "monitor": 3, "probe_order": 2}


def test_the_code_draws_only_from_the_named_streams():
    used = set()
    for name in ("aavae.py", "util/data.py", "util/probe.py", "linear_eval.py", "tools/bench.py"):
        with open(os.path.join(ROOT, name)) as f:
            text = f.read()
        used |= set(re.findall(r'generator\([^,()]+, "(\w+)"', text))
        used |= set(re.findall(r'\("(\w+)", args\.seed', text))  # keys handed on to Split.batches / TrainBatches
    assert used == set(STREAMS)


def test_no_two_random_streams_share_a_seed():
    # Keys in small ranges (seed, epoch or step, rank or batch offset): where collisions would show first.
    seeds = {}
    for stream, n in STREAMS.items():
        for keys in itertools.product(range(4), repeat=n):
            seeds.setdefault(misc.seed_for(stream, *keys), []).append((stream, keys))
    clashes = [v for v in seeds.values() if len(v) > 1]
    assert not clashes, clashes[:3]
    assert misc.seed_for("step", 1, 2) != misc.seed_for("step", 1, 2, 0)  # no zero padding of short key lists
