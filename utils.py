"""Plumbing shared by aavae.py, data.py, linear_eval.py and bench.py: bad-input errors, the torchrun process
group, preemption signals, seeded randomness, autocast, provenance, and files written atomically and read
with weights_only=True. Nothing here is specific to the method, which lives in aavae.py.
"""
import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
import zlib

import numpy as np
import torch
import torch.distributed as dist


class UserError(Exception):
    """Bad input: reported as one sentence and a non-zero exit, never as a traceback."""


EXIT_PREEMPTED = 3  # the exit status of a run stopped by SIGTERM / SIGUSR1 after saving its checkpoint


class Preempted(Exception):
    """A scheduler asked the run to stop, and its checkpoint is saved: one line and EXIT_PREEMPTED."""


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
    except Preempted as e:
        print(f"{prog}: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_PREEMPTED)
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


def broadcast_object(obj):
    """Rank 0's obj on every rank (pickled; tensors travel too): what only rank 0 can read, such as a
    checkpoint in an output directory that the other nodes do not share."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def local_rank_zero_first():
    """The body runs on local rank 0 of each node first (a download, say), then on the node's other ranks,
    which wait at a barrier meanwhile and find the files in place."""
    first = int(os.environ.get("LOCAL_RANK", 0)) == 0
    if dist.is_initialized() and not first:
        dist.barrier()
    try:
        yield
    finally:
        if dist.is_initialized() and first:
            dist.barrier()


def broadcast_buffers(model):
    """Gives every rank rank 0's BatchNorm statistics: DDP broadcasts them at each forward anyway, but after
    the last one they differ, and validation and checkpoints should see the ones training uses."""
    if dist.is_initialized():
        for b in model.buffers():
            dist.broadcast(b, 0)


class SavePolicy:
    """When a training loop should save, and when it should stop, decided alike on every rank.

    SIGTERM and SIGUSR1 (a scheduler's notice before it kills, preempts or requeues a job) set a flag instead
    of ending the process, and `save_every_minutes` asks for a save once that many minutes have passed on
    rank 0's clock since the last. poll() runs after every step: the flags are combined over ranks (max) on
    a gloo group of CPU tensors, so a signal to one rank stops them all after the same step, and the poll
    never waits for the GPU. Used as a context manager, it restores the previous signal handlers on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, save_every_minutes=None):
        self.minutes, self.received, self.last_save, self.previous = save_every_minutes, None, time.monotonic(), {}
        self.group = dist.new_group(backend="gloo") if dist.is_initialized() else None

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _on_signal(self, signum, frame):
        self.received = self.received or signal.Signals(signum).name

    def poll(self):
        """(save, stop) after the step just taken; stop comes with save."""
        due = self.minutes is not None and is_main() and time.monotonic() - self.last_save >= 60 * self.minutes
        stop = self.received is not None
        if self.group is not None:
            flags = torch.tensor([stop, due], dtype=torch.int32)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group)
            stop, due = bool(flags[0]), bool(flags[1])
        return stop or due, stop

    def saved(self):
        self.last_save = time.monotonic()


def ignore_stop_signals(_worker_id=None):
    """worker_init_fn of DataLoaders: a scheduler may signal every process of the job, and a worker that died
    of it would end the main process before it could save; the main process alone answers SIGTERM/SIGUSR1."""
    for s in SavePolicy.SIGNALS:
        signal.signal(s, signal.SIG_IGN)


# ----------------------------------------------------------------------------------------------------
# Randomness and precision


def seed_for(stream, *keys):
    """A 63-bit seed mixed from a stream's name and integer keys: every random draw is a pure function of
    (stream, seed, step, rank, ...). The name keeps streams apart whose keys coincide (the augmentation of
    step s and the data order of epoch s), and the number of keys is mixed in because SeedSequence pads
    short key lists with zeros: (a, b) and (a, b, 0) would otherwise give the same seed."""
    entropy = [zlib.crc32(stream.encode()), len(keys), *(int(k) for k in keys)]
    return int(np.random.SeedSequence(entropy).generate_state(2, np.uint64)[0] >> np.uint64(1))


def generator(device, stream, *keys):
    return torch.Generator(device).manual_seed(seed_for(stream, *keys))


# Dense bf16 tensor-core peaks in TFLOP/s (vendor figures, SXM parts), for the fraction of peak achieved.
PEAK_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def peak_tflops(device):
    """The device's dense bf16 peak, or None for a CPU or an accelerator not in PEAK_BF16."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


@contextlib.contextmanager
def deterministic(enabled):
    """torch's deterministic algorithms (cuDNN's included) while the body runs, when enabled: on CUDA,
    several kernels (cuDNN's algorithm choice, atomics in backward passes) are otherwise free to differ from
    run to run, which a resumed run would inherit. An op with no deterministic version raises an error."""
    if not enabled:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for reproducible results
    old = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old[0])
        torch.backends.cudnn.benchmark = old[1]


def native_bf16():
    """Whether bf16 autocast pays here: on CUDA, and on CPUs that compute bf16 products natively (AVX512-BF16
    or AMX). Elsewhere a CPU emulates bf16, more slowly than it computes fp32."""
    if torch.cuda.is_available():
        return True
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.7
    found = capabilities() if capabilities else {}
    return bool(found.get("avx512_bf16") or found.get("amx_bf16"))


def autocast(args, device):
    """A context factory: bf16 autocast on `device` when args.amp (resolved when the arguments were), else
    a no-op, so that one code path serves both."""
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


def trim_log(path, key, last):
    """Drops the lines of a log.jsonl whose `key` (step or epoch) lies beyond `last`: a resumed run redoes
    those steps and logs them again. A line cut short by a crash is dropped too."""
    if not is_main() or not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    keep = []
    for line in lines:
        with contextlib.suppress(ValueError, KeyError, TypeError):  # a torn or foreign line is dropped
            if json.loads(line)[key] <= last:
                keep.append(line if line.endswith("\n") else line + "\n")
    if keep != lines:
        save_atomic_text("".join(keep), path)


def write_log(path, row):
    if is_main():
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


def _git(*cmd):
    try:
        out = subprocess.run(["git", *cmd], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def git_sha():
    return _git("rev-parse", "--short", "HEAD")


def provenance():
    """What produced an output directory: the commit of this code and whether its tracked files had
    uncommitted changes, and the library versions. Recorded beside the arguments, never compared on resume."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": _git("rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status),
            "torch": torch.__version__, "torchvision": _version("torchvision"), "python": platform.python_version()}


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def args_differ(old, new, ignore=()):
    """The arguments that differ between two runs' records, as '--k old -> new, ...' ('' if none): what
    stops a run or a probe from resuming into a directory made with other arguments."""
    keys = sorted(k for k in set(old) | set(new) if k not in ignore and old.get(k) != new.get(k))
    return ", ".join(f"--{k} {old.get(k)} -> {new.get(k)}" for k in keys)
