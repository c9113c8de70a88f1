"""torchrun for a scheduler that stops jobs: torchrun's own flags and launcher, run in this process, with an exit
status that tells a preempted run from a failed one, and a scheduler's SIGUSR1 kept for the workers until they can
act on it. One per node, under SLURM (docs/cluster.md), which gives it --nnodes and --node_rank:

    srun python tools/launch.py --nproc_per_node=4 --master_addr=FIRST_NODE --master_port=PORT aavae.py --dataset imagenet ...

torchrun exits with status 1 whatever ended its workers: a crash, bad input, or a run that saved its checkpoint at
SIGTERM and exited with status 3. And SIGUSR1 kills torchrun itself. This exits with

    0       the workers finished;
    3       they stopped at a scheduler's notice with their checkpoint saved (util.misc.EXIT_PREEMPTED): requeue the job,
            or run the same command, to continue from there;
    2       they refused their arguments;
    1       any other failure of a worker;
    128+N   this process was stopped by signal N (SIGTERM, SIGINT, SIGHUP or SIGQUIT, which torchrun handles: it
            sends the workers SIGTERM, and they save if they are training, but it cannot say whether they did).

SIGUSR1 is blocked here before any worker starts, and the workers inherit the mask: a notice that comes while they
are still starting (reading the data, joining the process group) stays pending until the training loop unblocks it
(util.misc.SavePolicy), and the run saves after its first steps instead of dying of the signal with nothing saved.
A notice sent to this process alone is passed on to the workers, also to those started after it.
"""
import signal

NOTICE = signal.SIGUSR1
if __name__ == "__main__":  # before the imports, which take seconds: a notice meanwhile waits like any other
    signal.pthread_sigmask(signal.SIG_BLOCK, {NOTICE})

import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
from util.misc import EXIT_PREEMPTED, UserError, run_cli  # noqa: E402


def children(parent=None):
    """The process ids whose parent is `parent` (this process): torchrun's workers (each leads a session of its own,
    so a signal to this process group would miss them)."""
    parent, pids = parent or os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])  # the command name may hold spaces and ')'
        except (OSError, IndexError, ValueError):
            continue  # gone since the listing
        if ppid == parent:
            pids.append(int(name))
    return pids


def pass_notices_on():
    """Waits for SIGUSR1 (blocked in every thread, so it comes here), then sends it to each worker, and to each that
    starts later: a notice that comes before torchrun has started its workers is kept for them."""
    signal.sigwait({NOTICE})
    print(f"launch.py: {NOTICE.name} received; passing it on to the workers", file=sys.stderr, flush=True)
    told = set()
    while True:
        for pid in set(children()) - told:
            try:
                os.kill(pid, NOTICE)
            except ProcessLookupError:
                pass
            told.add(pid)
        time.sleep(1)


def exit_status(failures):
    """The status for torchrun's failures ({rank: ProcessFailure}): 3 when a worker exited with it and none with
    another positive status (the others were stopped by torchrun after the first had gone: a worker exits with 3
    only after the barrier that follows rank 0's save); the shared status of the others, else 1."""
    positive = {f.exitcode for f in failures.values() if f.exitcode > 0}
    if positive == {EXIT_PREEMPTED}:
        return EXIT_PREEMPTED
    return positive.pop() if len(positive) == 1 else 1


def launch(argv):
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if "SLURM_STEP_ID" in os.environ:
        # A task of srun, one a node: --nnodes and --node_rank from SLURM unless given (torchrun reads PET_<FLAG> as
        # a flag's default), for torchrun's default static rendezvous. Not c10d: its store lives in the first node's
        # launcher, which takes it down when its workers stop, and the other launchers, polling it, fail.
        os.environ.setdefault("PET_NNODES", os.environ["SLURM_STEP_NUM_TASKS"])
        os.environ.setdefault("PET_NODE_RANK", os.environ["SLURM_PROCID"])
    args = torchrun.parse_args(argv)
    if args.max_restarts:
        raise UserError("--max-restarts would restart a group that stopped at a scheduler's notice instead of "
                        "letting its job be requeued; leave it at 0 (the job script requeues)")
    signal.pthread_sigmask(signal.SIG_BLOCK, {NOTICE})  # blocked already when run as a script; every thread inherits it
    threading.Thread(target=pass_notices_on, daemon=True).start()
    try:
        torchrun.run(args)
    except ChildFailedError as e:
        status = exit_status(e.failures)
        rank, first = e.get_first_failure()
        if status == EXIT_PREEMPTED:
            print("launch.py: the workers saved their checkpoint at a scheduler's notice and stopped (exit status 3: "
                  "requeue the job, or run the same command, to continue)", file=sys.stderr, flush=True)
        else:
            print(f"launch.py: worker rank {rank} failed first, with exit status {first.exitcode} (its output is "
                  f"above); exit status {status}", file=sys.stderr, flush=True)
        sys.exit(status)
    except SignalException as e:
        print(f"launch.py: stopped by {e.sigval.name}; torchrun stopped the workers with SIGTERM (a worker that was "
              "training says above whether it saved)", file=sys.stderr, flush=True)
        sys.exit(128 + e.sigval)


if __name__ == "__main__":
    run_cli("launch.py", lambda: launch(sys.argv[1:]))
