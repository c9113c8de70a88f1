"""linear_eval.py under torchrun, instrumented for tests/test_cluster.py: runs each evaluation of its
arguments in turn in one launch (evaluations separated by "--then"; --mode cluster through methods/clustering.py),
and before a test split is scored each rank saves the BatchNorm statistics it scores with to OUTPUT_DIR/bn{RANK}.pt.
With `--download ROOT` first, tests/download_worker.py's check runs before the evaluations, in the same launch."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import linear_eval  # noqa: E402
from methods import clustering  # noqa: E402

rank = int(os.environ["RANK"])
args = sys.argv[1:]
if args[0] == "--download":
    import download_worker  # noqa: E402 (beside this file)
    download_worker.check(args[1])
    args = args[2:]
real_fit, real_score = linear_eval.fit, linear_eval.score
for argv in " ".join(args).split(" --then "):
    argv = argv.split()
    out = argv[argv.index("--output_dir") + 1]
    trained = []

    def fit(model, params_groups, trainable, *a, **k):
        trained.append(trainable)  # the whole model when fine-tuning
        return real_fit(model, params_groups, trainable, *a, **k)

    def score(*a, **k):
        stats = {n: b.clone() for n, b in trained[0].state_dict().items() if "running" in n}
        torch.save(stats, os.path.join(out, f"bn{rank}.pt"))
        return real_score(*a, **k)

    linear_eval.fit, linear_eval.score = fit, score
    (clustering.main if "cluster" in argv else linear_eval.main)(argv)
