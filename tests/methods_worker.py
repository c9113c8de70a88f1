"""Several methods of methods/ trained in turn in one torchrun launch, for tests/test_distributed.py:

    torchrun --nproc_per_node=2 tests/methods_worker.py OUT FOLDER SUBSET METHOD [METHOD ...]

Each method trains one step with its own command's arguments and recipe, in the one process group of the launch (its
main would close the group at its end), the semi-supervised uses on the images SUBSET names; each rank then saves every tensor it trained (the model's, and its extra state's: discriminators and their optimisers) to
OUT/METHOD/rank{RANK}.pt.
"""
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import aavae  # noqa: E402
from conftest import setup_run  # noqa: E402 (beside this file)

out, folder, subset, *methods = sys.argv[1:]
rank = int(os.environ["RANK"])


def tensors(state, prefix=""):
    """Every tensor of a nested state dict, by its path."""
    if torch.is_tensor(state):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return {k: v for key, value in items for k, v in tensors(value, f"{prefix}.{key}").items()}


for method in methods:
    argv = ["--method", method, "--dataset", "folder", "--data_path", folder, "--encoder", "resnet18", "--batch_size", "8",
            "--val_size", "8", "--val_samples", "2", "--workers", "0", "--log_every", "1", "--monitor_images", "0",
            "--max_steps", "1", "--output_dir", os.path.join(out, method)]
    argv += ["--subset_file", subset] if "semi" in method else []
    args, recipe = setup_run(argv)
    built, real_build = [], recipe.build
    recipe.build = lambda *a, **k: built.append(real_build(*a, **k)) or built[0]
    aavae.train(args, recipe)
    model, _, extra = built[0]
    torch.save({**tensors(model.state_dict(), "model"), **(tensors(extra.state_dict(), "extra") if extra else {})},
               os.path.join(out, method, f"rank{rank}.pt"))
dist.destroy_process_group()
