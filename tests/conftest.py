import contextlib
import json
import os
import sys

# The suite is a CPU suite wherever it runs: on a GPU host two ranks would share one GPU, the two-"node" test
# would give NCCL a duplicate device and cuDNN would break the bit-identity tests. Hidden before torch
# initialises CUDA, and so from every process the tests start. tests/test_cuda.py runs with AAVAE_TEST_CUDA=1.
CUDA_TESTS = os.environ.get("AAVAE_TEST_CUDA") == "1"
if not CUDA_TESTS:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))  # bench, gpu_check, launch
# Real CIFAR-10 images for the few tests that are about them: the tree that `run_all.sh --profile small` makes from
# CIFAR-10 (data/cifar10-mini), or a copy of it beside the repository; the tests skip, saying so, without either.
MINI = next((p for p in (os.path.join(ROOT, "data", "cifar10-mini"), os.path.join(ROOT, "..", "shared", "data", "cifar10-mini"))
             if os.path.isdir(p)), os.path.join(ROOT, "data", "cifar10-mini"))
NO_MINI = "needs cifar10-mini's real images: data/cifar10-mini, which bash run_all.sh --profile small makes from CIFAR-10"
SIZE = 16  # the side of generated images: the model adapts to it (CIFAR stem), and costs a quarter of 32 px's


def commands():
    """Which command trains each method: aavae.py the paper's four, methods/ the others (vae: aavae.py's; methods.iwae's
    vae is the IWAE paper's MNIST row)."""
    import aavae
    from methods import aae, aae_uses, controls, iwae
    return {**dict.fromkeys(controls.METHODS, controls), **dict.fromkeys(iwae.METHODS, iwae), **dict.fromkeys(aae.METHODS, aae),
            **dict.fromkeys(aae_uses.USES, aae_uses), **dict.fromkeys(aavae.METHODS, aavae)}


def __getattr__(name):  # `from conftest import COMMANDS` in a test module: torch is imported where tests run
    if name == "COMMANDS":
        return commands()
    raise AttributeError(name)


def pytest_configure(config):
    """Where this process runs tests (not pytest-xdist's controller, which only hands them out and so starts without
    torch, 6 s sooner on a 2-core CPU): torch's threads and checkpoints. Then the tests' temporary directory."""
    controller = (not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") != "no"
                  and getattr(config.option, "tx", None) and not config.getvalue("collectonly"))
    if not controller:
        setup_torch()
    use_memory_for_tmp(config)


def setup_torch():
    import torch
    # Two pytest workers (pytest -n 2) share the two cores: one thread each; a single process takes both. A process
    # the tests start with OMP_NUM_THREADS (torchrun's ranks, SLURM's jobs) keeps that count, which torch has read:
    # two ranks of two threads each on two cores, their OpenMP threads waiting at each barrier, took 1.7 times the
    # CPU time.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    # The checkpoints the tests write in their own process go without the zip's CRC-32 checksums, more than half of
    # torch.save's time (264 MB in memory: 0.28 s with them, 0.12 s without); the commands the tests start as
    # processes write theirs as a user's run does. (torch.utils.serialization is torch 2.6's and later's.)
    with contextlib.suppress(ImportError):
        from torch.utils.serialization import config as serialization_config
        serialization_config.save.compute_crc32 = False


def use_memory_for_tmp(config):
    """Training tests write checkpoints of ~200 MB each (GBs in all): on Linux, into memory (/dev/shm) when it
    has room, where writing them and syncing them to disk costs a fraction of a real disk's time."""
    shm = "/dev/shm"
    if config.option.basetemp is None and os.path.isdir(shm) and os.access(shm, os.W_OK):
        import shutil
        if shutil.disk_usage(shm).free > 8 << 30:
            config.option.basetemp = os.path.join(shm, f"aavae-tests-{os.getuid()}")


# The longest tests (30 to 75 s each on a 2-core AVX2 CPU, most of them starting processes of their own) go first, so
# that pytest's two workers do not end with one of them running a long test alone. Order only: nothing is skipped.
LONGEST_FIRST = ["test_cluster.py::test_two_nodes", "test_slurm.py::test_the_documented_job_script",
                 "test_run_all.py::test_the_quick_profile", "test_distributed.py::test_the_commands_of_methods",
                 "test_run_all.py::test_the_small_profile_fine_tunes", "test_run_all.py::test_the_small_profile_sets",
                 "test_gpu_check.py::", "test_cluster.py::test_under_torchrun"]


def pytest_collection_modifyitems(config, items):
    rank = lambda item: next((k for k, name in enumerate(LONGEST_FIRST) if name in item.nodeid), len(LONGEST_FIRST))
    items.sort(key=rank)  # stable: the rest keep their order


def make_folder(root, classes=2, train=12, val=4, size=SIZE, seed=0):
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


def write_subset(path):
    """Two labelled images of each class of make_folder's tree, named as --subset_file names them."""
    with open(path, "w") as f:
        f.write("".join(f"class{c}/{k:03d}.png\n" for c in range(2) for k in range(2)))
    return str(path)


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data"))


MONITOR = ["--monitor_images", "1000"]  # the representation monitor, which tiny_args leaves off


def tiny_args(data, out, *extra):
    """Command-line arguments for a run that takes seconds on a CPU: without the monitor's probes at each
    validation (a third of a tiny run's time), which the tests that are about them turn on with MONITOR."""
    return ["--dataset", "folder", "--data_path", data, "--encoder", "resnet18", "--batch_size", "8",
            "--val_size", "8", "--val_samples", "2", "--workers", "0", "--log_every", "1", "--monitor_images", "0",
            "--output_dir", str(out), *extra]


def setup_run(argv):
    """(args, recipe) of a pretraining command line: parsed and validated by the command of its --method."""
    import aavae
    module = commands()[argv[argv.index("--method") + 1] if "--method" in argv else "aavae"]
    args = module.validate(module.get_args_parser().parse_args(argv))
    return args, (aavae.paper_recipe if module is aavae else module.recipe)(args)


def read_log(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]
