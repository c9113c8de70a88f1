import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
MINI = os.path.join(ROOT, "..", "shared", "data", "cifar10-mini")  # real images, absent in a user's clone

# Two pytest workers (pytest -n 2) share the two cores: one thread each; a single process takes both.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))


def make_folder(root, classes=2, train=12, val=4, size=32, seed=0):
    """An ImageFolder tree of smooth random colour images, train/ and val/, `classes` sub-folders each."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            d = os.path.join(root, split, f"class{c}")
            os.makedirs(d, exist_ok=True)
            for k in range(n):
                low = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
                img = Image.fromarray(low).resize((size, size), Image.BILINEAR)
                img.save(os.path.join(d, f"{k:03d}.png"))
    return str(root)


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data"))


def tiny_args(data, out, *extra):
    """Command-line arguments for a run that takes seconds on a CPU."""
    return ["--dataset", "folder", "--data_path", data, "--encoder", "resnet18", "--batch_size", "8",
            "--val_size", "8", "--val_samples", "2", "--workers", "0", "--log_every", "1",
            "--output_dir", str(out), *extra]


def read_log(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]
