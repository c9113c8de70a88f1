"""Plumbing shared by aavae.py, data.py, linear_eval.py and tools/: bad-input errors, the torchrun process
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
from torch.nn.parallel import DistributedDataParallel as DDP


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
        # modulo: a launcher that shows each process only its own GPU (CUDA_VISIBLE_DEVICES per rank) leaves
        # one device, cuda:0, whatever the local rank
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
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


def rank_world():
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def print0(*a, **k):
    if is_main():
        print(*a, **k, flush=True)


def all_reduce(t, op=None):
    """Sum (or op) a tensor over processes, in place; a no-op without a process group."""
    if dist.is_initialized():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def block(n, rank, world):
    """(start, stop) of this rank's share of n items that the ranks split into contiguous blocks of
    ceil(n / world), the last one shorter or empty."""
    size = -(-n // world)
    return min(n, rank * size), min(n, (rank + 1) * size)


def padded(n, world):
    """n rounded up to a multiple of world: the rows of a tensor whose blocks gather_blocks gathers."""
    return -(-n // world) * world


def gather_blocks(out, rank, world):
    """out, (padded(n, world), ...), with every rank's block (misc.block) filled by that rank, on every
    rank: gathered in place, with no second copy of out."""
    if world > 1:
        b = len(out) // world
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # the new name (torch 2.14)
        gather(out, out[rank * b:(rank + 1) * b])
    return out


def broadcast_object(obj):
    """Rank 0's obj on every rank (pickled; tensors travel too): what only rank 0 can read, such as a
    checkpoint in an output directory that the other nodes do not share."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


DOWNLOAD_TIMEOUT = datetime.timedelta(hours=3)  # STL-10 is 2.6 GB; the collectives' own timeout is NCCL's 10 minutes


@contextlib.contextmanager
def local_rank_zero_first():
    """The body runs on local rank 0 of each node first (a download, say), then on the node's other ranks,
    which wait at a barrier meanwhile and find the files in place. The barrier is on a group of its own whose
    timeout is DOWNLOAD_TIMEOUT: on the training group a download longer than its timeout would end the job."""
    if not dist.is_initialized():
        yield
        return
    first = int(os.environ.get("LOCAL_RANK", 0)) == 0
    group = dist.new_group(timeout=DOWNLOAD_TIMEOUT)  # the default backend, so the same network as training
    if not first:
        dist.barrier(group=group)
    try:
        yield
    finally:
        if first:
            dist.barrier(group=group)
        dist.destroy_process_group(group)


def wrap_ddp(module, device, static_graph=True):
    """DistributedDataParallel whose gradients are views of its all-reduce buckets (no copy between the two).
    Every step uses the same parameters in the same order, so the graph is static and DDP can skip looking
    for unused ones; torch.compile's DDP support is not known to hold with that, so a compiled model goes
    without."""
    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True,
               static_graph=static_graph)


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
    rank 0's clock since the last. poll() runs after every step. Under torchrun the flags are combined over
    ranks (max) by the training group itself, on the training device, so they travel wherever the gradients
    do (a side group of another backend can pick another network interface across nodes). The host reads
    each step's combined flags one step later: by then the device has finished the step before, so the poll
    never makes the host wait for the step in flight, and every rank still acts after the same step. Used as
    a context manager, it restores the previous signal handlers on exit.

    A launcher may block the signals until the loop can answer them (launch.py blocks SIGUSR1, and its workers
    inherit the mask): a notice that arrived during start-up is then pending, and is delivered when __enter__
    unblocks it, so the run saves after its first steps instead of dying of the signal at start-up.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, save_every_minutes=None, device=torch.device("cpu")):
        self.minutes, self.received, self.last_save, self.previous = save_every_minutes, None, time.monotonic(), {}
        self.device, self.pending, self.stale_due = device, None, False

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS}
        self.mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, self.SIGNALS)  # after the handlers: a pending one lands
        return self

    def __exit__(self, *exc):
        signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _on_signal(self, signum, frame):
        self.received = self.received or signal.Signals(signum).name

    def poll(self):
        """(save, stop) after the step just taken; stop comes with save."""
        due = self.minutes is not None and is_main() and time.monotonic() - self.last_save >= 60 * self.minutes
        stop = self.received is not None
        if dist.is_initialized():
            stop, due = self._combined(stop, due)
        return stop or due, stop

    def _combined(self, stop, due):
        """The flags all ranks raised one poll ago (none at the first poll), and this poll's sent on."""
        cuda = self.device.type == "cuda"
        flags = torch.tensor([stop, due], dtype=torch.int32, pin_memory=cuda).to(self.device, non_blocking=True)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        host = torch.empty(2, dtype=torch.int32, pin_memory=cuda).copy_(flags, non_blocking=True)
        ready = torch.cuda.Event() if cuda else None
        if ready is not None:
            ready.record()
        previous, self.pending = self.pending, (host, ready)
        if previous is None:
            return False, False
        host, ready = previous
        if ready is not None:
            ready.synchronize()  # the previous step's flags: the device is past them, or nearly
        stop, due = bool(host[0]), bool(host[1]) and not self.stale_due
        # A save acted on now makes the `due` just sent stale: it was raised before this save.
        self.stale_due = stop or due
        return stop, due

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


# Dense bf16 tensor-core peaks in TFLOP/s (vendor datasheets), by the full name CUDA reports: the PCIe and
# NVL parts of a chip have lower clocks and power, and so lower peaks, than its SXM part.
PEAK_BF16 = {"NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H100 PCIe": 756.0, "NVIDIA H100 NVL": 835.0,
             "NVIDIA H200": 989.0, "NVIDIA H200 NVL": 835.0,
             "NVIDIA A100-SXM4-80GB": 312.0, "NVIDIA A100-SXM4-40GB": 312.0, "NVIDIA A100-PCIE-40GB": 312.0,
             "NVIDIA A100 80GB PCIe": 312.0}


def peak_tflops(device):
    """The device's dense bf16 peak, or None for a CPU or an accelerator not in PEAK_BF16 (no mfu is better
    than a wrong one)."""
    if device.type != "cuda":
        return None
    return PEAK_BF16.get(torch.cuda.get_device_name(device))


@contextlib.contextmanager
def algorithms(deterministic):
    """The convolution algorithms while the body runs. By default cuDNN times its algorithms for each new
    shape and keeps the fastest (cudnn.benchmark). With `deterministic`, torch's deterministic algorithms
    instead (cuDNN's included): on CUDA, several kernels (cuDNN's algorithm choice, atomics in backward
    passes) are otherwise free to differ from run to run, which a resumed run would inherit. An op with no
    deterministic version raises an error."""
    old = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for reproducible results
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old[0])
        torch.backends.cudnn.benchmark = old[1]


def default_workers():
    """DataLoader workers per process: the cores this process may use, shared among the processes torchrun
    starts on the node, less one for the process itself (at least one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1)) - 1)


def native_bf16():
    """Whether bf16 autocast pays here: on CUDA, and on CPUs that compute bf16 products natively (AVX512-BF16
    or AMX). Elsewhere a CPU emulates bf16, more slowly than it computes fp32. ONEDNN_MAX_CPU_ISA below
    those instruction sets (AVX2, say) keeps oneDNN's convolutions off them, and then bf16 is emulated too."""
    if torch.cuda.is_available():
        return True
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.7
    found = capabilities() if capabilities else {}
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    capped = isa not in ("ALL", "DEFAULT") and not any(s in isa for s in ("BF16", "AMX", "FP16", "AVX10"))
    return bool(found.get("avx512_bf16") or found.get("amx_bf16")) and not capped


def autocast(args, device):
    """A context factory: bf16 autocast on `device` when args.amp (resolved when the arguments were), else
    a no-op, so that one code path serves both."""
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.amp else contextlib.nullcontext


# ----------------------------------------------------------------------------------------------------
# Files: written atomically, checkpoints read with weights_only=True


def on_cpu(obj):
    """obj with every tensor in it (in dicts, lists and tuples) copied to the CPU: a file saved from the GPU
    then loads on a machine without one, with no map_location."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_cpu(v) for v in obj)
    return obj


def save_atomic(obj, path, write=lambda obj, path: torch.save(on_cpu(obj), path)):
    """Writes to a temporary file, syncs it, then renames it over `path`: never a half-written file. By
    default obj is torch.save'd with its tensors on the CPU."""
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
    """Reads a checkpoint with weights_only=True; anything else is refused with one sentence. The file is
    mapped, not read: a probe that needs the encoder of a training checkpoint reads none of the optimiser."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
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
