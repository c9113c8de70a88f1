"""Several methods of methods/ trained in turn in one torchrun launch, for tests/test_distributed.py:

    torchrun --nproc_per_node=2 tests/methods_worker.py OUT FOLDER SUBSET METHOD[=ARG,ARG...] [METHOD ...]

First each rank computes SimCLR's NT-Xent loss of its block of a seeded global batch of projections, and its
gradients, and saves them to OUT/ntxent/loss{RANK}.pt. Then each method trains one step (or as its ARGs, comma-separated,
say) with its own command's arguments and recipe, in the one process group of the launch (its main would close the
group at its end), the semi-supervised uses on the images SUBSET names; each rank then saves every tensor it trained
(the model's, and its extra state's: discriminators and their optimisers) to OUT/METHOD/rank{RANK}.pt.
"""
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import aavae  # noqa: E402
from conftest import setup_run  # noqa: E402 (beside this file)
from methods import controls  # noqa: E402
from util import misc  # noqa: E402

out, folder, subset, *methods = sys.argv[1:]
rank, world, _ = misc.setup_distributed()


def tensors(state, prefix=""):
    """Every tensor of a nested state dict, by its path."""
    if torch.is_tensor(state):
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return {k: v for key, value in items for k, v in tensors(value, f"{prefix}.{key}").items()}


z1, z2 = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(0))  # the global batch: 12 images
n = len(z1) // world
mine = [z[rank * n:(rank + 1) * n].clone().requires_grad_() for z in (z1, z2)]
loss = controls.nt_xent_loss(*mine, temperature=0.5)
loss.backward()
os.makedirs(os.path.join(out, "ntxent"), exist_ok=True)
torch.save({"loss": loss.detach(), "grad1": mine[0].grad, "grad2": mine[1].grad},
           os.path.join(out, "ntxent", f"loss{rank}.pt"))

for spec in methods:
    method, _, extra = spec.partition("=")
    argv = ["--method", method, "--dataset", "folder", "--data_path", folder, "--encoder", "resnet18", "--batch_size", "8",
            "--val_size", "8", "--val_samples", "2", "--workers", "0", "--log_every", "1", "--monitor_images", "0",
            "--max_steps", "1", "--output_dir", os.path.join(out, method)]
    argv += ["--subset_file", subset] if "semi" in method else []
    argv += extra.split(",") if extra else []
    args, recipe = setup_run(argv)
    built, real_build = [], recipe.build
    recipe.build = lambda *a, **k: built.append(real_build(*a, **k)) or built[0]
    aavae.train(args, recipe)
    model, _, extra_state = built[0]
    trained = {**tensors(model.state_dict(), "model"), **(tensors(extra_state.state_dict(), "extra") if extra_state else {})}
    torch.save(trained, os.path.join(out, method, f"rank{rank}.pt"))
dist.destroy_process_group()
