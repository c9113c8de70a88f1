"""A pretraining command under torchrun, instrumented for tests/test_distributed.py: aavae.py, or the command of
methods/ that trains the --method given.

    [KILL_RANK=R KILL_STEP=S] [SIGNAL_RANK=R SIGNAL_STEP=S [SIGNAL_ATTEMPT=A]] [PRIVATE_DIR_RANK=R] \
        torchrun ... tests/ddp_worker.py <the command's arguments>

Each rank saves its final weights to OUTPUT_DIR/rank{R}.pt, the sample indices it trained on to
OUTPUT_DIR/indices{R}.pt, the training images it holds in memory to OUTPUT_DIR/images{R}.pt, and the
backends of the process groups the run made beside the training group, with its thread count, to
OUTPUT_DIR/groups{R}.json. With KILL_RANK, that rank SIGKILLs itself before its S-th step on the first
attempt only (torchrun's TORCHELASTIC_RESTART_COUNT is 0), so that torchrun restarts the group. With
SIGNAL_RANK, that rank alone sends itself SIGTERM after its S-th step, as a scheduler would (with SIGNAL_ATTEMPT,
in that attempt only: 1 is the first restart). With
PRIVATE_DIR_RANK, that rank's --output_dir is OUTPUT_DIR-rankR instead, as on a node that does not share
the other nodes' filesystem.
"""
import faulthandler
import json
import os
import signal
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import aavae  # noqa: E402
from conftest import COMMANDS  # noqa: E402 (beside this file)
from util import data  # noqa: E402

argv = sys.argv[1:]
out = argv[argv.index("--output_dir") + 1]
rank = int(os.environ["RANK"])
if str(rank) == os.environ.get("PRIVATE_DIR_RANK"):
    argv[argv.index("--output_dir") + 1] = f"{out}-rank{rank}"
faulthandler.register(signal.SIGUSR1)
seen, steps = [], [0]

real_rank_indices = data.TrainBatches.rank_indices


def rank_indices(self, epoch, start_it=0):
    idx = real_rank_indices(self, epoch, start_it)
    seen.append((epoch, start_it, idx.clone()))
    return idx


command = COMMANDS[argv[argv.index("--method") + 1] if "--method" in argv else "aavae"]
step_name = "step" if hasattr(command, "step") else "train_step"  # the function its recipe reads when the run starts
real_step = getattr(command, step_name)


def train_step(*a, **k):
    steps[0] += 1
    if (str(rank) == os.environ.get("KILL_RANK") and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
            and steps[0] == int(os.environ["KILL_STEP"])):
        os.kill(os.getpid(), signal.SIGKILL)
    out = real_step(*a, **k)
    attempt = os.environ.get("SIGNAL_ATTEMPT", os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if (str(rank) == os.environ.get("SIGNAL_RANK") and steps[0] == int(os.environ["SIGNAL_STEP"])
            and attempt == os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")):
        os.kill(os.getpid(), signal.SIGTERM)
    return out


real_load_data, real_new_group, groups = data.load_data, torch.distributed.new_group, []


def load_data(args, device, spec, probe=False):
    data_out = real_load_data(args, device, spec, probe)
    os.makedirs(out, exist_ok=True)  # the shared directory's name, also for a rank with a private one
    torch.save(data_out[0].images, os.path.join(out, f"images{rank}.pt"))
    return data_out


def new_group(*a, **k):
    groups.append(k.get("backend"))
    return real_new_group(*a, **k)


real_finish = aavae.finish


def finish(args, raw_model, step, steps_per_epoch):
    torch.save({k: v.clone() for k, v in raw_model.state_dict().items()}, os.path.join(out, f"rank{rank}.pt"))
    torch.save(seen, os.path.join(out, f"indices{rank}.pt"))
    with open(os.path.join(out, f"groups{rank}.json"), "w") as f:
        json.dump({"groups": groups, "threads": torch.get_num_threads()}, f)
    return real_finish(args, raw_model, step, steps_per_epoch)


data.TrainBatches.rank_indices = rank_indices
data.load_data = load_data
torch.distributed.new_group = new_group
setattr(command, step_name, train_step)
aavae.finish = finish
command.main(argv)
