"""Plumbing shared by aavae.py, linear_eval.py and bench.py: bad-input errors, the torchrun process group,
seeded randomness, autocast, and files written atomically and read with weights_only=True.

Nothing here is specific to the method; PAPER.md's content lives in aavae.py.
"""
import argparse
import contextlib
import datetime
import json
import os
import subprocess
import sys

import numpy as np
import torch
import torch.distributed as dist


class UserError(Exception):
    """Bad input: reported as one sentence and a non-zero exit, never as a traceback."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is reported in one line instead of the whole usage text."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run_cli(prog, fn):
    """Runs fn() for a script's main: bad input ends as one line on stderr and exit status 2, and the
    process group is closed however the run ends."""
    try:
        return fn()
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------------
# torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; a plain run has none of them.


def setup_distributed():
    """Returns (rank, world_size, device); NCCL on CUDA, gloo on CPU."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=_attempt_store(),
                                rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]),
                                device_id=device if device.type == "cuda" else None)
    return dist.get_rank(), dist.get_world_size(), device


def _attempt_store():
    """The key-value store of this attempt of a torchrun job, or None for the default env:// one.

    When torchrun restarts a failed group (--max-restarts) it keeps its store, and the default process
    group's keys of the dead attempt are still there: a restarted rank can read a dead peer's address and
    hang or fail. Every rank therefore counts itself in on the store, and the count gives a generation
    number that all ranks of one attempt share (TORCHELASTIC_RESTART_COUNT is per node, not global).
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    world = int(os.environ["WORLD_SIZE"])
    base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                         timeout=datetime.timedelta(minutes=30))
    generation = (base.add("aavae/joined", 1) - 1) // world
    return dist.PrefixStore(f"aavae/attempt{generation}", base)


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def print0(*a, **k):
    if is_main():
        print(*a, **k, flush=True)


def all_reduce(t, op=None):
    """Sum (or op) a tensor over processes, in place; a no-op without a process group."""
    if dist.is_initialized():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def broadcast_buffers(model):
    """Gives every rank rank 0's BatchNorm statistics: DDP broadcasts them at each forward anyway, but after
    the last one they differ, and validation and checkpoints should see the ones training uses."""
    if dist.is_initialized():
        for b in model.buffers():
            dist.broadcast(b, 0)


# ----------------------------------------------------------------------------------------------------
# Randomness and precision


def seed_for(*keys):
    """A 63-bit seed mixed from integers: every random draw is a pure function of (seed, step, rank, ...)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def generator(device, *keys):
    return torch.Generator(device).manual_seed(seed_for(*keys))


# Dense bf16 tensor-core peaks in TFLOP/s (vendor figures, SXM parts), for the fraction of peak achieved.
PEAK_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def peak_tflops(device):
    """The device's dense bf16 peak, or None for a CPU or an accelerator not in PEAK_BF16."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def autocast(args, device):
    """bf16 autocast on CUDA unless --no-amp (args.amp None means the device decides), else a no-op."""
    if args.amp is None:
        args.amp = device.type == "cuda"
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.amp else contextlib.nullcontext


# ----------------------------------------------------------------------------------------------------
# Files: written atomically, checkpoints read with weights_only=True


def save_atomic(obj, path, write=torch.save):
    """Writes to a temporary file, syncs it, then renames it over `path`: never a half-written file."""
    tmp = path + ".tmp"
    write(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_atomic_text(text, path):
    def write(t, p):
        with open(p, "w") as f:
            f.write(t)
    save_atomic(text, path, write)


def save_atomic_json(obj, path):
    save_atomic_text(json.dumps(obj, indent=1), path)


def load_checkpoint(path):
    """Reads a checkpoint with weights_only=True; anything else is refused with one sentence."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist") from None
    except Exception as e:
        blocked = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line]
        if blocked:  # the weights-only unpickler met a class or function it will not import
            raise UserError(f"checkpoint {path} needs arbitrary unpickling, which is refused ({blocked[0]})") from None
        raise UserError(f"checkpoint {path} is corrupt or not a file written by torch.save") from None


def write_log(path, row):
    if is_main():
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


def git_sha():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__)), timeout=5).stdout.strip() or None
    except Exception:
        return None
