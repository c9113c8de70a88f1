"""aae_uses.py's methods under torchrun, for tests/test_aae_uses.py: one launch trains each METHOD in turn, one
step, in the same process group, and each rank saves its final weights (the model's and the discriminators')
to OUT/METHOD/rank{R}.pt.

    torchrun --nproc_per_node=2 tests/uses_worker.py OUT DATA SUBSET_FILE METHOD...
"""
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from methods import aae_uses  # noqa: E402
import aavae  # noqa: E402

out, folder, subset, *methods = sys.argv[1:]
rank = int(os.environ["RANK"])
built = {}
real_build = aae_uses.build


def build(*a, **k):
    built["run"] = real_build(*a, **k)
    return built["run"]


aae_uses.build = build  # the uses' recipe reads it when a run starts
for method in methods:
    argv = ["--method", method, "--dataset", "folder", "--data_path", folder, "--encoder", "resnet18", "--batch_size", "8",
            "--val_size", "8", "--val_samples", "2", "--workers", "0", "--log_every", "1", "--monitor_images", "0",
            "--max_steps", "1", "--output_dir", os.path.join(out, method)]
    argv += ["--subset_file", subset] if "semi" in method else []
    args = aae_uses.validate(aae_uses.get_args_parser().parse_args(argv))
    aavae.train(args, aae_uses.recipe(args))
    model, _, phases = built["run"]
    discs = {"style": phases.style, "categorical": phases.categorical}
    torch.save({**model.state_dict(), **{f"{name}.{k}": v for name, adv in discs.items() if adv
                                          for k, v in adv.disc.state_dict().items()}},
               os.path.join(out, method, f"rank{rank}.pt"))
dist.destroy_process_group()
