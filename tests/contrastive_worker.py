"""NT-Xent under torchrun, for tests/test_controls.py:

    torchrun --nproc_per_node=2 tests/contrastive_worker.py OUT <methods/controls.py arguments>

Each rank computes the loss of its block of a seeded global batch of projections and its gradients, and saves
them to OUT/loss{RANK}.pt; then the ranks train the given run together.
"""
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from methods import controls  # noqa: E402
from util import misc  # noqa: E402

out, argv = sys.argv[1], sys.argv[2:]
rank, world, _ = misc.setup_distributed()
z1, z2 = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(0))  # the global batch: 12 images
n = len(z1) // world
mine = [z[rank * n:(rank + 1) * n].clone().requires_grad_() for z in (z1, z2)]
loss = controls.nt_xent_loss(*mine, temperature=0.5)
loss.backward()
os.makedirs(out, exist_ok=True)
torch.save({"loss": loss.detach(), "grad1": mine[0].grad, "grad2": mine[1].grad}, os.path.join(out, f"loss{rank}.pt"))
dist.barrier()
controls.main(argv)
