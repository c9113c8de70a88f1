"""util/data.py's CIFAR-10 loading under torchrun with torchvision's dataset faked, for tests/test_cluster.py; run
by tests/probe_worker.py before its evaluations (`--download ROOT`), one launch for both.

The fake "downloads" (writes ROOT/archive, for longer than the process group's timeout, which is made short
here) when the archive is absent, and finds it otherwise; each rank writes what it did to ROOT/rank{RANK}.json.
"""
import datetime
import json
import os
import time

import numpy as np

from util import data
from util import misc

TIMEOUT = datetime.timedelta(seconds=2)  # NCCL's default is 10 minutes, shorter than STL-10's download


def check(root):
    done = []

    class FakeCIFAR10:
        def __init__(self, path, train, download):
            archive = os.path.join(path, "archive")
            if os.path.exists(archive):
                done.append("found")
            else:
                time.sleep(2 * TIMEOUT.total_seconds())  # a rank that did not wait would find no archive, or time out
                with open(archive, "w") as f:
                    f.write("data")
                done.append("downloaded")
            self.data, self.targets = np.zeros((2, 32, 32, 3), np.uint8), [0, 1]

    real, data.torchvision.datasets.CIFAR10 = data.torchvision.datasets.CIFAR10, FakeCIFAR10
    misc.dist.init_process_group("gloo", timeout=TIMEOUT)
    rank, _, _ = misc.setup_distributed()
    data._torchvision_dataset("cifar10", root, "test")
    with open(os.path.join(root, f"rank{rank}.json"), "w") as f:
        json.dump(done, f)
    misc.dist.destroy_process_group()
    data.torchvision.datasets.CIFAR10 = real
