"""The experiment grid behind run_all.sh: every table and figure of the paper (Tables 1-3, Figs. 2-5), as
pretraining runs of aavae.py (and of methods/ for the rows beyond the paper) and evaluations of linear_eval.py,
then the tables beside the paper's numbers (experiments/report.py).

    python -m experiments.grid --profile paper --data_root /data --dry_run     # every command, with GPU-hours
    python -m experiments.grid --profile quick --data_path data/cifar10-mini --output_dir R

Each run has its own directory under OUTPUT/runs, each evaluation under OUTPUT/evals. A step that finished
is skipped (a marker file, or its result.json); an interrupted one is simply run again, and aavae.py (or
linear_eval.py, for a probe or fine-tuning) resumes it from its checkpoint. Runs whose accuracy is followed
over training (Fig. 2) are pretrained in segments: raising --epochs (or --max_steps) continues the same run,
and a probe follows each segment.
"""
import argparse
import contextlib
import importlib
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: the commands run from there
METHODS = ["ae", "aaae", "vae", "aavae"]
REGULARISERS = METHODS + ["iwae", "aa_iwae", "aae", "aa_aae"]
# The commands of the methods beyond the paper (aavae.py trains the paper's four), and of their evaluations
# (linear_eval.py runs the paper's).
PRETRAIN = {"methods.controls": ("simclr", "supervised"), "methods.iwae": ("iwae", "aa_iwae"), "methods.aae": ("aae", "aa_aae"),
            "methods.aae_uses": tuple(f"{aa}{kind}_aae" for kind in ("supervised", "semi", "cluster", "dimred")
                                      for aa in ("", "aa_"))}
EVALUATE = {"cluster": ("methods.clustering",), **dict.fromkeys(("head", "grid", "map"), ("methods.aae_uses", "evaluate"))}

# The paper's numbers, top-1 % (Table 1: linear probe; Table 2: fine-tuning; Table 3: Places205 linear probe)
PAPER_TABLE1 = {"ae": {"cifar10": 56.34, "stl10": 42.26, "imagenet": 0.89},
                "aaae": {"cifar10": 50.62, "stl10": 41.94, "imagenet": 1.29},
                "vae": {"cifar10": 57.16, "stl10": 44.15, "imagenet": 4.58},
                "aavae": {"cifar10": 87.14, "stl10": 84.72, "imagenet": 51.0}}
# The paper's AAAE row is the authors' model, which reconstructs the augmented view (docs/authors-code.md); this
# repository's aaae reconstructs the original, as AAVAE's Eq. 3 does. Both are Table 1 rows, and the paper's AAAE
# figures sit beside the authors' model alone (paper_table1).
TABLE1_ROWS = {"ae": ["--method", "ae"], "aaae": ["--method", "aaae"],
               "aaae, augmented target": ["--method", "aaae", "--target", "augmented"],
               "vae": ["--method", "vae"], "aavae": ["--method", "aavae"]}
TABLE1_NAMES = {"aaae, augmented target": "aaae-authors"}  # its runs' and evaluations' directory names
PAPER_ROW = {"aaae": None, "aaae, augmented target": "aaae"}  # the row of PAPER_TABLE1 each Table 1 row compares with


def paper_table1(row, dataset):
    """The paper's Table 1 figure to set beside `row` (a key of TABLE1_ROWS, or "random init"), or None."""
    return PAPER_TABLE1.get(PAPER_ROW.get(row, row), {}).get(dataset)


PAPER_TABLE2 = {"aavae": {0.01: 21.37, 0.1: 39.85}, "vae": {0.01: 0.1, 0.1: 0.98}}
PAPER_PLACES = {"aavae": 41.45, "vae": 6.78}

# Cost model of the dry run: forward + backward GFLOP per image of ResNet-50 + decoder50 (measured with
# torch.utils.flop_counter), at an assumed 300 TFLOP/s per GPU (about 30 % of an H100's dense bf16 peak).
GFLOP = {32: 10.8, 96: 24.4, 224: 38.0}
ASSUMED_TFLOPS = 300.0
IMAGES = {"cifar10": 45000, "stl10": 100000, "imagenet": 1276167}
PROBE_IMAGES = {"cifar10": 45000, "stl10": 4500, "imagenet": 1281167}
SIZE = {"cifar10": 32, "stl10": 96, "imagenet": 224}


def profile_settings(args):
    """Everything that differs between the paper's grid and the quick one that runs on a laptop CPU (the
    small and split profiles have a grid of their own: build_small_grid)."""
    if args.profile in ("small", "split"):
        # the paper's recipe (Adam, lr 2.5e-4, constant after warm-up, ResNet-18 + decoder18 here) but for its
        # length, the warm-up (small: one epoch of 30 instead of ten of 3,200; split: SPLIT_WARMUP of its epochs)
        # and the lr's base batch, 128 instead of 256. The split profile's 45,000 images validate on 1,000 held-out
        # images each epoch and checkpoint every 10 minutes as well.
        every = (["--warmup_epochs", "1", "--val_size", "0"] if args.profile == "small" else
                 ["--warmup_epochs", f"{SPLIT_WARMUP * args.small_epochs:g}", "--val_size", "1000",
                  "--save_every_minutes", "10"])
        return {"datasets": {"folder": args.data_path}, "main": "folder",
                "pretrain": {"folder": ["--encoder", "resnet18", "--batch_size", "128", "--base_batch", "128", *every,
                                        "--val_every", "1", "--save_every", "1", "--val_samples", "4", "--log_every",
                                        "10", "--workers", "2"]},
                "length": lambda d, frac=1.0: ["--epochs", str(round(args.small_epochs * frac))],
                "probe": ["--cached_features", "--batch_size", "256", "--workers", "2"],
                "knn": ["--batch_size", "256", "--workers", "2"], "finetune": [],
                "cluster": ["--batch_size", "256", "--workers", "2"]}
    if args.profile == "paper":
        root = args.data_root
        return {
            "datasets": {"cifar10": os.path.join(root, "cifar10"), "stl10": os.path.join(root, "stl10"),
                         "imagenet": os.path.join(root, "imagenet")},
            "main": "cifar10", "semi": "imagenet",
            "pretrain": {"cifar10": ["--encoder", "resnet50", "--batch_size", "256"],
                         "stl10": ["--encoder", "resnet50", "--batch_size", "512"],
                         "imagenet": ["--encoder", "resnet50", "--batch_size", "512"]},
            "length": lambda d, frac=1.0: ["--epochs", str(round({"imagenet": 2100}.get(d, 3200) * frac))],
            "segments": [0.125, 0.25, 0.5, 1.0],  # 400, 800, 1600, 3200 epochs on CIFAR-10
            "probe": ["--epochs", "90", "--batch_size", "256"], "sweep_probe": "linear",
            "knn": ["--batch_size", "256"], "finetune": ["--epochs", "20", "--batch_size", "256"],
            "batches": [128, 256, 512, 1024], "base_batch": 256, "latents": [64, 128, 256, 512],
            "decoders": ["decoder18", "decoder34", "decoder50"],  # behind the fixed ResNet-50 encoder
            "betas": [0.0, 0.01, 0.1, 1.0, 10.0], "seeds": [0, 1, 2],
        }
    data = args.data_path
    return {  # the quick tables read no monitor (the small and split profiles' curves do): --monitor_images 0
        "datasets": {"folder": data}, "main": "folder", "semi": "folder",
        "pretrain": {"folder": ["--encoder", "resnet18", "--batch_size", "32", "--base_batch", "32", "--val_size", "64",
                                "--val_samples", "2", "--monitor_images", "0", "--warmup_epochs", "0", "--workers", "2"]},
        "length": lambda d, frac=1.0: ["--max_steps", str(max(1, round(args.quick_steps * frac)))],
        "segments": [0.5, 1.0],
        "probe": ["--epochs", "1", "--batch_size", "128", "--train_limit", "1024", "--workers", "2"],
        "sweep_probe": "knn", "knn": ["--batch_size", "128", "--train_limit", "1024", "--workers", "2"],
        "finetune": ["--epochs", "1", "--batch_size", "64", "--workers", "2"],
        "batches": [16, 32, 64], "base_batch": 32, "latents": [64, 128, 256],
        "decoders": ["decoder18", "decoder34", "decoder50"],  # behind the fixed ResNet-18 encoder
        "betas": [0.0, 0.1, 1.0, 10.0], "seeds": [0],
    }


def subset_list(args, frac):
    """SimCLR's list of the ImageNet training images kept with 1 % or 10 % of the labels."""
    path = os.path.join(args.subset_dir, {0.01: "1percent.txt", 0.1: "10percent.txt"}[frac])
    if not os.path.isfile(path):
        sys.exit(f"run_all: --subset_dir {args.subset_dir} has no {os.path.basename(path)} (SimCLR's ImageNet label list)")
    return path


def log_scales(n=3):
    """Fig. 4d: log-scales drawn uniformly in [-5, 2] (seeded, so that every invocation agrees)."""
    rng = random.Random(0)
    return sorted(round(rng.uniform(-5, 2), 2) for _ in range(n))


# ----------------------------------------------------------------------------------------------------
# The grid: a list of steps, each a command with a directory that tells whether it is done, and the cells
# of the tables, each read from an evaluation's result.json (and a run's validation line).


@dataclass
class Step:
    kind: str  # "pretrain" or "eval"
    cmd: list  # as a user would type it in the repository root
    dir: str
    marker: str  # the file in dir whose presence says the step is done
    hours: float = 0.0  # estimated GPU-hours (paper profile)


@dataclass
class Cell:
    table: str
    row: object
    col: object
    eval: str  # the evaluation directory whose result.json fills the cell
    run: str = None  # the pretraining run whose validation line gives active units and bits per dimension
    at: tuple = None  # which validation line: (key, value), e.g. ("step", 4); the last one if None
    seed: int = 0


def overridden(flags, extra):
    """flags (a list of --flag [value] items) with those that extra sets again left out, then extra."""
    given, out, i = {t for t in extra if t.startswith("--")}, [], 0
    while i < len(flags):
        n = 2 if i + 1 < len(flags) and not flags[i + 1].startswith("--") else 1
        if flags[i] not in given:
            out += flags[i:i + n]
        i += n
    return out + list(extra)


class Grid:
    def __init__(self, args):
        self.args, self.s = args, profile_settings(args)
        self.steps, self.cells = [], []  # steps in execution order; cells: what the tables read

    def launcher(self, script, *sub):
        """Commands are kept as a user would type them in the repository root (a script, or a module of methods/
        run with -m, then its subcommand); runnable() resolves them. Several processes get --sync_bn: BatchNorm then
        sees the whole global batch, as on the paper's one GPU (a per-process batch of 256 / N would change the
        statistics the tables are made with)."""
        target = [script] if script.endswith(".py") else ["-m", script]
        if self.args.nproc > 1:
            return ["torchrun", "--standalone", f"--nproc_per_node={self.args.nproc}", *target, *sub, "--sync_bn"]
        return ["python", *target, *sub]

    def pretrain(self, name, dataset, extra=(), frac=1.0, seed=0):
        """The pretraining run `name` up to fraction frac of its length: a run followed over training is
        pretrained in segments, each continuing the last (raising --epochs or --max_steps resumes it). The
        command is the one that trains extra's --method (PRETRAIN)."""
        method = extra[list(extra).index("--method") + 1] if "--method" in extra else "aavae"
        script = next((command for command, methods in PRETRAIN.items() if method in methods), "aavae.py")
        out = os.path.join(self.args.output_dir, "runs", name)
        base = ["--dataset", dataset, "--data_path", self.s["datasets"][dataset],
                *overridden(self.s["pretrain"][dataset] + ["--seed", str(seed)], extra)]
        cmd = self.launcher(script) + overridden(base, self.s["length"](dataset, frac)) + ["--output_dir", out]
        self.steps.append(Step("pretrain", cmd, out, f".done_{frac:g}", self.hours(dataset, frac)))
        return out

    def evaluate(self, name, dataset, mode, run=None, extra=(), data_path=None):
        """An evaluation of run's encoder (a random-init one without run); returns its directory."""
        out = os.path.join(self.args.output_dir, "evals", name)
        source = ["--checkpoint", os.path.join(run, "checkpoint.pt")] if run else ["--random_init"]
        per_mode = {"linear": self.s["probe"], "knn": self.s["knn"], "finetune": self.s.get("finetune"),
                    "similarity": ["--workers", "2"], "cluster": self.s.get("cluster", self.s["knn"]),
                    "head": self.s["knn"], "grid": ["--workers", "2"], "map": self.s["knn"]}[mode]
        cmd = self.launcher(*EVALUATE.get(mode, ("linear_eval.py",))) + source + [
            "--dataset", dataset, "--data_path", data_path or self.s["datasets"][dataset], "--mode", mode,
            *overridden(per_mode, extra), "--output_dir", out]
        probe_epochs = 90 if mode == "linear" else 20 if mode == "finetune" else 1
        hours = PROBE_IMAGES.get(dataset, 0) * probe_epochs * GFLOP.get(SIZE.get(dataset), 0) * 0.15 / (ASSUMED_TFLOPS * 1e3) / 3600
        self.steps.append(Step("eval", cmd, out, "result.json", hours))
        return out

    def hours(self, dataset, frac):
        if self.args.profile != "paper":
            return 0.0
        epochs = {"imagenet": 2100}.get(dataset, 3200) * frac
        return IMAGES[dataset] * epochs * GFLOP[SIZE[dataset]] / (ASSUMED_TFLOPS * 1e3) / 3600

    def stop(self, dataset, frac):
        """Where a segment ends, as the log.jsonl key and value of its validation line: (epoch, E) or (step, S)."""
        flag, value = self.s["length"](dataset, frac)
        return ("epoch" if flag == "--epochs" else "step", int(value))

    def cell(self, table, row, col, eval, **where):
        self.cells.append(Cell(table, row, col, eval, **where))


# The small profile's rows: the controls (supervised training and SimCLR, the reference rows of the paper's
# Tables 2 and 1, in the same pipeline), Table 1's autoencoders, and a second seed of the pair the paper's
# question turns on. "random init" is a row too (an untrained encoder, evaluated only).
SMALL_ROWS = {"supervised": ["--method", "supervised"], "simclr": ["--method", "simclr"],
              "ae": ["--method", "ae"], "aaae": ["--method", "aaae"],
              "aaae-authors": ["--method", "aaae", "--target", "augmented"],
              "vae": ["--method", "vae"], "aavae": ["--method", "aavae"],
              "aaae-s1": ["--method", "aaae", "--seed", "1"], "aavae-s1": ["--method", "aavae", "--seed", "1"]}
# The adversarial autoencoder's other uses (methods/aae_uses.py) at the same budget, beside the rows above: each trains
# with the profile's recipe, then gets the probe and kNN on its encoder as every row, and its own evaluation
# (python -m methods.aae_uses evaluate --mode head, grid or map). The semi-supervised runs read the label lists of
# Table 2's rows.
USES_ROWS = {**{f"{aa}semi-aae-{pct}": ["--method", f"{aa.replace('-', '_')}semi_aae", "--subset_file", pct]
                for pct in ("1percent", "10percent") for aa in ("", "aa-")},
             **{f"{aa}cluster-aae-k{k}": ["--method", f"{aa.replace('-', '_')}cluster_aae", "--clusters", str(k)]
                for k in (16, 10) for aa in ("", "aa-")},
             "aa-supervised-aae": ["--method", "aa_supervised_aae"],
             "aa-dimred-aae": ["--method", "aa_dimred_aae", "--latent_dim", "2"]}
USES_EVAL = {"semi": "head", "cluster": "head", "supervised": "grid", "dimred": "map"}
uses_mode = lambda row: USES_EVAL[next(k for k in USES_EVAL if k in row)]  # a uses row's own evaluation
SMALL_ALL = ["random init", *SMALL_ROWS, *USES_ROWS]  # --rows' names, in the table's order
# The split profile: Table 1's rows (the controls, the authors' AAAE and a second seed of AAVAE and AAAE among them)
# at one budget on a 45,000 / 5,000 split of CIFAR-10's training images (an ImageFolder tree: train/ and val/),
# probed and k-means-clustered (K = 10) on all of train/ and scored on all of val/. SPLIT_EPOCHS of 351 full batches of
# 128 is 179,712 images seen per row, the first SPLIT_WARMUP of them (10 %) in the lr's linear warm-up.
SPLIT_ALL = ["random init", *SMALL_ROWS]
SPLIT_EPOCHS, SPLIT_WARMUP = 4, 0.1
SMALL_LABELS = {"supervised": "supervised (control)", "simclr": "SimCLR (control)",
                "aaae-authors": "aaae, augmented target (the authors')", "aaae-s1": "aaae, seed 1",
                "aavae-s1": "aavae, seed 1"}
PAPER_SIMCLR = 94.00  # the SimCLR row of the paper's Table 1, CIFAR-10
# Table 2 at the small budget and the clusters: for these rows (not the seed-1 pair), fine-tuning and the cached probe
# on the same labelled images of train/ (the lists in OUTPUT/label-subsets, one seeded draw per class for every row),
# and k-means on the frozen features. Fine-tuning at a batch of at most 128 (the subset's size below that), Table 2's
# head lr (linear_eval.FINETUNE_LR), a tenth of its backbone lr and 100 epochs, all three chosen on images held out
# of train/ with AAVAE's encoder (results/small-cpu-30-labels/README.md): Table 2's own backbone lr and 20 epochs
# left AAVAE near chance on 30 labelled images.
LABEL_ROWS = ["random init", "supervised", "simclr", "ae", "aaae", "aaae-authors", "vae", "aavae"]
LABEL_FRACTIONS = {0.01: "1percent", 0.1: "10percent"}
SMALL_FINETUNE = ["--batch_size", "128", "--workers", "2"]
SMALL_FINETUNE_EPOCHS = {0.01: 100, 0.1: 100}
SMALL_BACKBONE_LR_SCALE = 0.1
# The split profile's fine-tuning is chosen before its Table 2 (--finetune_choice), without val/: FINETUNE_CHOICE_HOLDOUT
# of train/'s images held out (holdout_split), the labelled lists drawn from the rest as Table 2's are, and the encoders of
# FINETUNE_CHOICE_ROWS fine-tuned with each recipe of FINETUNE_GRID (multiples of Table 2's backbone and head lr, both
# scaled by batch / 256 in linear_eval.py), SPLIT_FINETUNE_EPOCHS long, scored on the held-out images. At each fraction
# the recipe with the highest mean top-1 over those encoders, among the recipes whose every log is stable (no epoch's
# mean loss above the first epoch's: stable()), is the one SPLIT_FINETUNE names for every row of Table 2.
FINETUNE_CHOICE_ROWS = ["aavae", "simclr", "supervised"]
FINETUNE_CHOICE_HOLDOUT = 5000
FINETUNE_GRID = {f"b{b:g}-h{h:g}": (b, h) for b in (1, 0.1) for h in (1, 0.2)}
SPLIT_FINETUNE_EPOCHS = {0.01: 100, 0.1: 20}
# {fraction: a name of FINETUNE_GRID}: the choice's outcome, results/split-cpu-4/finetune-choice/choice.json
SPLIT_FINETUNE = {0.01: "b0.1-h0.2", 0.1: "b1-h0.2"}


def finetune_flags(frac, recipe):
    """linear_eval.py's flags for fine-tuning at a label fraction with a recipe of FINETUNE_GRID (split profile)."""
    import linear_eval
    backbone, head = linear_eval.FINETUNE_LR[frac]
    b, h = FINETUNE_GRID[recipe]
    return ["--batch_size", "128", "--workers", "2", "--epochs", str(SPLIT_FINETUNE_EPOCHS[frac]),
            "--lr", f"{backbone * b:g}", "--head_lr", f"{head * h:g}"]


def stable(log):
    """A fine-tuning log (log.jsonl's lines) is stable when no epoch's mean training loss exceeds the first epoch's."""
    return bool(log) and all(r["loss"] <= log[0]["loss"] for r in log)


def build_small_grid(args):
    """The small profile: Table 1's encoders and the two controls at equal budget on one ImageFolder dataset,
    followed over training by the run's own monitor, then a cached-feature linear probe and kNN on val/, and
    Fig. 5's similarity for VAE and AAVAE. The authors' AAAE (reconstructing the augmented view) is its own row.
    --rows keeps some rows, --pretrain_args changes the recipe of every run, and --holdout replaces val/ by
    images of train/ (holdout_split), so that a recipe is chosen without looking at val/."""
    g = Grid(args)
    if args.finetune_choice:  # the choice alone: its rows' pretraining, then finetune_choice's evaluations
        for row in FINETUNE_CHOICE_ROWS:
            g.pretrain(f"folder-{row}", "folder", SMALL_ROWS[row] + args.pretrain_args)
        finetune_choice(g, args)
        return g
    for row, extra in SMALL_ROWS.items():
        if row not in args.rows:
            continue
        name = f"folder-{row}"
        run = g.pretrain(name, "folder", extra + args.pretrain_args)
        g.cell("table1", row, "linear", g.evaluate(f"linear-{name}", "folder", "linear", run), run=run)
        g.cell("table1", row, "knn", g.evaluate(f"knn-{name}", "folder", "knn", run), run=run)
        if row in ("vae", "aavae"):
            g.cell("fig5", row, "similarity", g.evaluate(f"fig5-{row}", "folder", "similarity", run))
        if args.label_evals and row in LABEL_ROWS:
            label_evals(g, args, row, name, run)
        elif args.profile == "split":  # the clusters alone: Table 2's recipe on this split is chosen apart
            g.cell("cluster", row, "kmeans", g.evaluate(f"cluster-{name}", "folder", "cluster", run))
    for row, extra in USES_ROWS.items():
        if row not in args.rows:
            continue
        name, extra = f"folder-{row}", list(extra)
        if "--subset_file" in extra:  # the list Table 2's rows use (label_subsets writes it)
            at = extra.index("--subset_file") + 1
            extra[at] = os.path.join(args.output_dir, "label-subsets", f"{extra[at]}.txt")
        run = g.pretrain(name, "folder", extra + args.pretrain_args)
        g.cell("uses", row, "linear", g.evaluate(f"linear-{name}", "folder", "linear", run), run=run)
        g.cell("uses", row, "knn", g.evaluate(f"knn-{name}", "folder", "knn", run), run=run)
        mode = uses_mode(row)
        g.cell("uses", row, mode, g.evaluate(f"{mode}-{name}", "folder", mode, run), run=run)
    aavae_run = os.path.join(args.output_dir, "runs", "folder-aavae")  # what the uses stand beside: AAVAE's
    if set(args.rows) & set(USES_ROWS) and ("aavae" in args.rows or os.path.exists(os.path.join(aavae_run, "checkpoint.pt"))):
        g.cell("cluster", "aavae", "kmeans k16", g.evaluate("cluster-k16-folder-aavae", "folder", "cluster", aavae_run,
                                                            ["--clusters", "16"]))
        g.cell("uses", "aavae", "map", g.evaluate("map-folder-aavae", "folder", "map", aavae_run))
    if "random init" in args.rows:
        g.cell("table1", "random init", "linear", g.evaluate("linear-random", "folder", "linear", extra=["--encoder", "resnet18"]))
        g.cell("table1", "random init", "knn", g.evaluate("knn-random", "folder", "knn", extra=["--encoder", "resnet18"]))
        if args.label_evals:
            label_evals(g, args, "random init", "random", None, ["--encoder", "resnet18"])
        elif args.profile == "split":
            g.cell("cluster", "random init", "kmeans", g.evaluate("cluster-random", "folder", "cluster", None,
                                                                  ["--encoder", "resnet18"]))
    return g


def finetune_choice(g, args):
    """The split profile's fine-tuning choice (FINETUNE_GRID): each recipe, and the cached probe on the same labels,
    for every encoder of FINETUNE_CHOICE_ROWS, on the hold-out tree OUTPUT/finetune-choice/holdout-data (main makes
    it, with its label lists)."""
    choice = os.path.join(args.output_dir, "finetune-choice")
    tree = os.path.join(choice, "holdout-data")
    for row in FINETUNE_CHOICE_ROWS:
        run = os.path.join(args.output_dir, "runs", f"folder-{row}")
        for frac, pct in LABEL_FRACTIONS.items():
            subset = ["--subset_file", os.path.join(choice, "label-subsets", f"{pct}.txt")]
            for recipe in FINETUNE_GRID:
                g.cell("choice", row, (pct, recipe), g.evaluate(f"choice-finetune-{pct}-{row}-{recipe}", "folder", "finetune",
                                                                run, [*finetune_flags(frac, recipe), *subset], data_path=tree))
            g.cell("choice", row, (pct, "probe"), g.evaluate(f"choice-linear-{pct}-{row}", "folder", "linear", run, subset,
                                                             data_path=tree))


def label_evals(g, args, row, name, run, extra=()):
    """Table 2 at the small budget and the clusters for one row: at each label fraction, fine-tuning and the
    cached probe trained on the same labelled images (the lists label_subsets writes), scored on all of
    the test split; and k-means on the frozen features (k = classes)."""
    import linear_eval
    for frac, pct in LABEL_FRACTIONS.items():
        subset = ["--subset_file", os.path.join(args.output_dir, "label-subsets", f"{pct}.txt")]
        lr, head_lr = linear_eval.FINETUNE_LR[frac]
        lr = round(lr * SMALL_BACKBONE_LR_SCALE, 6)
        tune = SMALL_FINETUNE + ["--epochs", str(SMALL_FINETUNE_EPOCHS[frac]), "--lr", str(lr), "--head_lr", str(head_lr)]
        if args.profile == "split":  # the recipe chosen on images held out of train/ (finetune_choice)
            tune = finetune_flags(frac, SPLIT_FINETUNE[frac])
        g.cell("table2", row, f"finetune {pct}", g.evaluate(f"finetune-{pct}-{name}", "folder", "finetune", run,
                                                            [*extra, *tune, *subset]))
        g.cell("table2", row, f"linear {pct}", g.evaluate(f"linear-{pct}-{name}", "folder", "linear", run, [*extra, *subset]))
    g.cell("cluster", row, "kmeans", g.evaluate(f"cluster-{name}", "folder", "cluster", run, extra))


def label_subsets(data_path, out, seed=0):
    """Writes out/1percent.txt and out/10percent.txt: a seeded per-class draw of train/'s images
    (data.per_class_subset), one CLASS/FILE a line, for --subset_file. Lists already there are kept:
    a copied results folder reuses its own."""
    paths = {frac: os.path.join(out, f"{pct}.txt") for frac, pct in LABEL_FRACTIONS.items()}
    if all(map(os.path.exists, paths.values())):
        return
    import torch
    import torchvision
    from util import data
    samples = torchvision.datasets.ImageFolder(os.path.join(data_path, "train")).samples
    names = ["/".join(p.replace(os.sep, "/").split("/")[-2:]) for p, _ in samples]
    os.makedirs(out, exist_ok=True)
    for frac, path in paths.items():
        if not os.path.exists(path):
            keep = data.per_class_subset(torch.tensor([y for _, y in samples]), frac, seed)
            with open(path + ".tmp", "w") as f:
                f.writelines(names[i] + "\n" for i in keep.tolist())
            os.replace(path + ".tmp", path)


def made_already(out, manifest):
    """Whether out holds the hold-out split that manifest describes (its holdout.json agrees on manifest's keys); a
    split of other images there stops the run, never overwritten."""
    if not os.path.exists(out):
        return False
    saved = read_json(os.path.join(out, "holdout.json")) or {}
    if {k: saved.get(k) for k in manifest} != manifest:
        sys.exit(f"run_all: {out} holds a hold-out split of other images; give another --output_dir")
    return True


def holdout_split(source, n, out, create=True, seed=0):
    """An ImageFolder tree out/{train,val}/CLASS/ of symlinks into source/train/: n of its images, drawn per
    class in proportion to the class's size (seeded), become val/; the rest stay train/. source/val/ is not
    read. Returns out. A tree made earlier from another source, n or seed is refused, not overwritten."""
    root = os.path.join(source, "train")
    if not os.path.isdir(root):
        sys.exit(f"run_all: --holdout needs {root} (an ImageFolder tree, one sub-folder per class)")
    files = {c: sorted(f for f in os.listdir(os.path.join(root, c)) if not f.startswith("."))
             for c in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, c))}
    total = sum(map(len, files.values()))
    if not 0 < n < total:
        sys.exit(f"run_all: --holdout {n} must be between 1 and {total - 1}, the images of {root} less one")
    share = {c: n * len(f) / total for c, f in files.items()}
    take = {c: int(v) for c, v in share.items()}  # then the largest remainders, until n are taken
    for c in sorted(share, key=lambda c: (take[c] - share[c], c))[:n - sum(take.values())]:
        take[c] += 1
    rng = random.Random(seed)
    held = {c: sorted(rng.sample(f, take[c])) for c, f in files.items()}
    manifest = {"source": os.path.abspath(root), "holdout": n, "seed": seed, "val": held}
    if made_already(out, manifest) or not create:
        return out
    tmp = out + ".partial"  # built aside and renamed: an interrupted build leaves no half tree at out
    shutil.rmtree(tmp, ignore_errors=True)
    for c, f in files.items():
        kept = set(held[c])
        for name in f:
            d = os.path.join(tmp, "val" if name in kept else "train", c)
            os.makedirs(d, exist_ok=True)
            os.symlink(os.path.join(manifest["source"], c, name), os.path.join(d, name))
    with open(os.path.join(tmp, "holdout.json"), "w") as f:
        json.dump(manifest, f)
    os.rename(tmp, out)
    return out


# The mnist profile: the IWAE paper's Table 1 (one stochastic layer) with its own model, Adam and schedule
# (methods/iwae.py --arch mlp), every row the same first stages of the schedule: --mnist_passes 40 (stages 0-3) or 121
# (0-4) of the paper's 3,280 (0-7). Each row is then scored by -L_5000 and its active units on all of MNIST's val
# (python -m methods.iwae evaluate); its log follows -L_100 on 1,000 val images after every pass.
MNIST_IWAE_ROWS = {"vae-k1": ("vae", 1), "iwae-k5": ("iwae", 5), "vae-k50": ("vae", 50), "iwae-k50": ("iwae", 50)}
# and the AAE paper's uses (methods/aae_uses.py --arch mlp), each --mnist_aae_epochs long, scored by its own evaluation
# on all of val: the semi-supervised y head with 100 and 1,000 labels, the clustering y head with 16 and 30 clusters
# (by the paper's rule and by majority), a second seed of the 100-label and 16-cluster rows; the style grid; the 2-D map
MNIST_AAE_ROWS = {"semi-100": ["--method", "semi_aae", "--labels_per_class", "10"],
                  "semi-100-s1": ["--method", "semi_aae", "--labels_per_class", "10", "--seed", "1"],
                  "semi-1000": ["--method", "semi_aae", "--labels_per_class", "100"],
                  "cluster-16": ["--method", "cluster_aae", "--clusters", "16"],
                  "cluster-16-s1": ["--method", "cluster_aae", "--clusters", "16", "--seed", "1"],
                  "cluster-30": ["--method", "cluster_aae", "--clusters", "30"],
                  "supervised": ["--method", "supervised_aae"],
                  "dimred": ["--method", "dimred_aae", "--clusters", "10"]}
MNIST_ALL = [*MNIST_IWAE_ROWS, *MNIST_AAE_ROWS]
MNIST_AAE = ["--arch", "mlp", "--dataset", "mnist", "--batch_size", "100", "--base_batch", "100", "--lr", "0.0003",
             "--warmup_epochs", "0", "--val_every", "5", "--save_every", "5", "--log_every", "100",
             "--save_every_minutes", "10"]
MNIST_AAE_EPOCHS = 50
# the width and learning rates of MNIST_AAE, chosen on 10,000 images held out of train (docs/iwae-aae-mnist.md): each
# setting's --pretrain_args, run for semi-100 and cluster-16, 10 epochs; experiments/report.py's mnist_aae_choice
# reads them
MNIST_AAE_CHOICE = {"lr0.001": ["--lr", "0.001"], "lr0.0003": ["--lr", "0.0003"], "lr0.003": ["--lr", "0.003"],
                    "w500": ["--mlp_hidden", "500"], "lr0.0003-st": ["--lr", "0.0003", "--y_straight_through"]}
# the clustering rows train on train less this many images (a seeded draw, OUTPUT/rule-data), which the paper's rule
# reads in place of the paper's validation images: val, which is scored, is never one of them
MNIST_RULE_BANK = 5000
# the AAE paper's MNIST errors (%) for these rows (Tables 2 and 3; None: a figure, not a number)
PAPER_AAE = {"semi-100": 1.90, "semi-100-s1": 1.90, "semi-1000": 1.60, "cluster-16": 9.55, "cluster-16-s1": 9.55,
             "cluster-30": 4.10, "supervised": None, "dimred": None}
MNIST_PASSES = 40
MNIST_IWAE = ["--arch", "mlp", "--dataset", "mnist", "--batch_size", "20", "--base_batch", "20", "--lr", "1e-3",
              "--schedule", "stages", "--warmup_epochs", "0", "--val_every", "1", "--val_size", "1000", "--val_samples",
              "100", "--save_every", "1", "--log_every", "500", "--save_every_minutes", "10"]
MNIST_NLL_SAMPLES = 5000
# Burda et al.'s Table 1, MNIST, one stochastic layer, after 3,280 passes: NLL on the test set (nats) and active units
# of 50 (None: not in the sources read; docs/iwae-aae-mnist.md)
PAPER_IWAE = {"vae-k1": (86.76, None), "iwae-k5": (85.54, None), "vae-k50": (86.35, 20), "iwae-k50": (84.78, 25)}
PAPER_IWAE_PASSES = 3280


def build_mnist_grid(args):
    """The mnist profile: each row of MNIST_IWAE_ROWS pretrained for --mnist_passes, then its NLL evaluation."""
    g = Grid(args)
    for row in args.rows:
        if row in MNIST_AAE_ROWS:
            mnist_aae_row(g, args, row)
            continue
        method, k = MNIST_IWAE_ROWS[row]
        out = os.path.join(args.output_dir, "runs", f"mnist-{row}")
        cmd = g.launcher("methods.iwae") + ["--method", method, "--iw_samples", str(k), "--data_path", args.data_path,
                                            *MNIST_IWAE, "--epochs", str(args.mnist_passes), *args.pretrain_args,
                                            "--output_dir", out]
        g.steps.append(Step("pretrain", cmd, out, f".done_{args.mnist_passes}"))
        ev = os.path.join(args.output_dir, "evals", f"nll-{row}-p{args.mnist_passes}")  # a longer run is another result
        g.steps.append(Step("eval", g.launcher("methods.iwae", "evaluate") + [
            "--checkpoint", os.path.join(out, "checkpoint.pt"), "--samples", str(MNIST_NLL_SAMPLES), "--output_dir", ev],
            ev, "result.json"))
        g.cell("iwae", row, args.mnist_passes, ev, run=out)
    return g


def mnist_aae_row(g, args, row):
    """One AAE use on MNIST: its pretraining for --mnist_aae_epochs, then its own evaluation on all of val."""
    out = os.path.join(args.output_dir, "runs", f"mnist-{row}")
    extra = MNIST_AAE_ROWS[row]
    rule = ["--rule_data", args.rule_data] if extra[1] == "cluster_aae" else []
    g.steps.append(Step("pretrain", g.launcher("methods.aae_uses") + [
        *extra, "--data_path", rule[1] if rule else args.data_path, *MNIST_AAE, "--epochs", str(args.mnist_aae_epochs),
        *args.pretrain_args, "--output_dir", out], out, f".done_{args.mnist_aae_epochs}"))
    mode = uses_mode(extra[1].replace("_aae", ""))
    ev = os.path.join(args.output_dir, "evals", f"{mode}-{row}-e{args.mnist_aae_epochs}")
    g.steps.append(Step("eval", g.launcher("methods.aae_uses", "evaluate") + [
        "--mode", mode, "--checkpoint", os.path.join(out, "checkpoint.pt"), "--dataset", "mnist", "--data_path",
        args.data_path, *rule, "--workers", "0", "--output_dir", ev], ev, "result.json"))
    g.cell("aae", row, mode, ev, run=out)


def build_grid(args):
    if args.profile == "mnist":
        return build_mnist_grid(args)
    if args.profile in ("small", "split"):
        return build_small_grid(args)
    g = Grid(args)
    s, main = g.s, g.s["main"]
    encoders = {d: next(a for k, a in zip(s["pretrain"][d], s["pretrain"][d][1:]) if k == "--encoder") for d in s["datasets"]}

    # Table 1: the four autoencoders on each dataset, the authors' AAAE beside this repository's, and a
    # random-init row. The main dataset's AAVAE run is also Fig. 2's fixed-scale curve: pretrained in
    # segments, each probed.
    runs = {}
    for d in s["datasets"]:
        for m, flags in TABLE1_ROWS.items():
            for seed in (s["seeds"] if d == main else [0]):
                name = f"{d}-{TABLE1_NAMES.get(m, m)}" + (f"-s{seed}" if seed else "")
                followed = d == main and m == "aavae" and seed == 0
                for frac in (s["segments"] if followed else [1.0]):
                    run = g.pretrain(name, d, flags, frac, seed)
                    if followed:
                        ev = g.evaluate(f"fig2-fixed-{frac:g}", d, s["sweep_probe"], run)
                        g.cell("fig2", "fixed", frac, ev, run=run, at=g.stop(d, frac))
                runs[(d, m, seed)] = run
                ev = g.evaluate(f"table1-{name}", d, "linear", run)
                g.cell("table1", m, d, ev, seed=seed)
                if d == main and seed == 0 and m in METHODS:  # the first four rows of the regulariser table
                    g.cell("regularisers", m, "linear", ev)
                    g.cell("regularisers", m, "knn", g.evaluate(f"knn-{name}", d, "knn", run), run=run)
        g.cell("table1", "random init", d, g.evaluate(f"table1-{d}-random", d, "linear", extra=["--encoder", encoders[d]]))

    # Fig. 2: a learned log-scale, followed over training like the fixed one.
    for frac in s["segments"]:
        run = g.pretrain(f"{main}-aavae-learned", main, ["--method", "aavae", "--learn_scale"], frac)
        g.cell("fig2", "learned", frac, g.evaluate(f"fig2-learned-{frac:g}", main, s["sweep_probe"], run), run=run,
               at=g.stop(main, frac))

    # Fig. 3: beta * KL on top of AAVAE (Section 4.3).
    aavae_run = runs[(main, "aavae", 0)]
    for beta in s["betas"]:
        run = aavae_run if beta == 0 else g.pretrain(f"{main}-aavae-beta{beta:g}", main, ["--method", "aavae", "--beta", str(beta)])
        g.cell("fig3", beta, "top1", g.evaluate(f"fig3-beta{beta:g}", main, s["sweep_probe"], run))

    # Fig. 4 (Section 4.4): batch size (lr and warm-up scaled linearly), latent size, decoder, log-scale;
    # each varies one setting of the default AAVAE run.
    default_batch = s["pretrain"][main][s["pretrain"][main].index("--batch_size") + 1]
    for b in s["batches"]:
        warm = [] if args.profile == "quick" else ["--warmup_epochs", f"{10 * b / s['base_batch']:g}"]
        extra = ["--method", "aavae", "--batch_size", str(b), "--base_batch", str(s["base_batch"]), *warm]
        run = aavae_run if str(b) == default_batch else g.pretrain(f"{main}-aavae-batch{b}", main, extra)
        g.cell("fig4_batch", b, "top1", g.evaluate(f"fig4-batch{b}", main, s["sweep_probe"], run))
    for z in s["latents"]:
        run = aavae_run if z == 128 else g.pretrain(f"{main}-aavae-latent{z}", main, ["--method", "aavae", "--latent_dim", str(z)])
        g.cell("fig4_latent", z, "top1", g.evaluate(f"fig4-latent{z}", main, s["sweep_probe"], run))
    mirror = encoders[main].replace("resnet", "decoder")  # the decoder a run gets by default
    for dec in s["decoders"]:  # the encoder stays the profile's (ResNet-50 in the paper); only the decoder varies
        run = aavae_run if dec == mirror else g.pretrain(f"{main}-aavae-{dec}", main, ["--method", "aavae", "--decoder", dec])
        g.cell("fig4_decoder", dec, "top1", g.evaluate(f"fig4-{dec}", main, s["sweep_probe"], run))
    for ls in log_scales():
        run = g.pretrain(f"{main}-aavae-logscale{ls:g}", main, ["--method", "aavae", "--log_scale", str(ls)])
        g.cell("fig4_logscale", ls, "top1", g.evaluate(f"fig4-logscale{ls:g}", main, s["sweep_probe"], run))

    # Fig. 5 (Appendix A.4): similarity matrices of VAE and AAVAE latents.
    for m in ("vae", "aavae"):
        g.cell("fig5", m, "similarity", g.evaluate(f"fig5-{m}", main, "similarity", runs[(main, m, 0)]))

    # Table 2 (Appendix A.2): semi-supervised fine-tuning with 1 % and 10 % of the labels: SimCLR's published
    # ImageNet lists (the paper's) when --subset_dir holds them, else a seeded per-class subset, labelled so.
    semi = s["semi"]
    for m in ("vae", "aavae"):
        for frac in (0.01, 0.1):
            subset = ["--subset_file", subset_list(args, frac)] if args.subset_dir else []
            ev = g.evaluate(f"table2-{m}-{frac:g}", semi, "finetune", runs[(semi, m, 0)], ["--label_fraction", str(frac), *subset])
            g.cell("table2", m, frac, ev)

    # Table 3 (Appendix A.3): Places205 linear probe of the ImageNet encoders, when the user has the dataset.
    if args.places_path:
        for m in ("vae", "aavae"):
            ev = g.evaluate(f"table3-places-{m}", "folder", "linear", runs[("imagenet", m, 0)],
                            ["--epochs", "14", "--lr", "0.01", "--schedule", "step", "--weight_decay", "5e-4",
                             "--no-nesterov", "--image_size", "224"], data_path=args.places_path)
            g.cell("table3", m, "places205", ev)

    # Latent regularisers: IWAE and AAE, plain and augmentation-augmented, beside Table 1's four.
    for m in REGULARISERS[4:]:
        run = g.pretrain(f"{main}-{m}", main, ["--method", m])
        g.cell("regularisers", m, "linear", g.evaluate(f"reg-{m}", main, "linear", run))
        g.cell("regularisers", m, "knn", g.evaluate(f"knn-{main}-{m}", main, "knn", run), run=run)
    return g


# ----------------------------------------------------------------------------------------------------
# Running


def execute(cmd, log, in_process=False):
    """Runs one command with its output appended to log; returns its exit status. In-process (tests
    only) calls the script's main() directly, which spares the interpreter start-up of each step."""
    if not in_process:
        return subprocess.run(runnable(cmd), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    name, argv = (cmd[2], cmd[3:]) if cmd[1] == "-m" else (os.path.splitext(cmd[1])[0], cmd[2:])
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            importlib.import_module(name).main(argv)
        except SystemExit as e:
            return e.code or 0
    return 0


def make_mini(args):
    """DATA_ROOT/cifar10-mini (quick, small) or DATA_ROOT/cifar10-split (split), made from CIFAR-10's training batches
    (downloaded first if absent) unless it is there."""
    if os.path.isdir(args.data_path):
        return
    print(f"making {args.data_path} from CIFAR-10's training batches in {os.path.join(args.data_root, 'cifar10')}",
          flush=True)
    from util import data
    from util import misc
    build = data.build_cifar10_split if args.profile == "split" else data.build_cifar10_mini
    try:
        build(os.path.join(args.data_root, "cifar10"), args.data_path)
    except misc.UserError as e:
        sys.exit(f"run_all: {e}")


def runnable(cmd):
    """python -> this interpreter, torchrun -> its module, so that the grid runs in the caller's environment."""
    head = {"python": [sys.executable], "torchrun": [sys.executable, "-m", "torch.distributed.run"]}[cmd[0]]
    return head + cmd[1:]


def done(step):
    return os.path.exists(os.path.join(step.dir, step.marker))


def run_grid(g, args, argv=None):
    """Runs the steps not yet done, in order; OUTPUT/run.json gets this invocation's record (record_run) at the
    start and after every step, with each step's minutes, so that a part stopped midway is recorded too."""
    todo = [st for st in g.steps if not done(st)]
    print(f"{len(g.steps)} steps, {len(g.steps) - len(todo)} already done", flush=True)
    t0, timings = time.time(), []
    key = record_run(args, argv, 0.0, timings, new=True)
    for k, st in enumerate(g.steps):
        if done(st):
            continue
        print(f"[{k + 1}/{len(g.steps)}] {shlex.join(st.cmd)}", flush=True)
        os.makedirs(st.dir, exist_ok=True)
        log_path = os.path.join(st.dir, f"{st.kind}.log")
        t = time.time()
        with open(log_path, "a") as log:
            code = execute(st.cmd, log, args.in_process)
        timings.append({"step": os.path.relpath(st.dir, args.output_dir), "minutes": round((time.time() - t) / 60, 2),
                        "exit": code})
        record_run(args, argv, time.time() - t0, timings, key=key)
        if code != 0:
            sys.exit(f"run_all: step {k + 1} failed (exit {code}); see {log_path}. Re-running the same command resumes here.")
        if st.kind == "pretrain":
            open(os.path.join(st.dir, st.marker), "w").close()
    print(f"all steps done in {(time.time() - t0) / 60:.1f} min", flush=True)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def record_run(args, argv, seconds, steps=(), new=False, key=None):
    """OUTPUT/run.json: per invocation, the command, the code it ran (commit, dirty flag, library versions, as the
    invocation began: a checkout during a long part does not rewrite it), the machine (and whether its CPU computes
    bf16 natively), the minutes so far and each step's. new starts this invocation's record and returns its key;
    otherwise the record of that key is brought up to date. Two invocations into one OUTPUT (two rows side by side)
    each keep their own record: the file is read and written under a lock, and each updates its own entry."""
    import fcntl
    import platform

    from util import misc
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, "run.json")
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        runs = (read_json(path) or {}).get("invocations", [])
        at = len(runs) if new else next(k for k, r in enumerate(runs) if r.get("key") == key)
        entry = {"key": f"{os.getpid()}-{time.time_ns()}" if new else key,
                 "command": "bash run_all.sh " + shlex.join(sys.argv[1:] if argv is None else argv),
                 "provenance": misc.provenance() if new else runs[at]["provenance"],
                 "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                 f"{platform.processor() or platform.platform()}", "native_bf16": misc.native_bf16(),
                 "minutes": round(seconds / 60, 1), "steps": list(steps)}
        misc.save_atomic_json({"invocations": runs[:at] + [entry] + runs[at + 1:]}, path)
    return entry["key"]


def main(argv=None):
    p = argparse.ArgumentParser("run_all.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="paper", choices=["paper", "quick", "small", "split", "mnist"],
                   help="paper: every table and figure; quick: every cell for a few steps (a smoke run); small: "
                        "Table 1's encoders and two controls at equal budget on a small folder, with curves, Table 2 and "
                        "clusters, and the AAE's other uses: about 4 hours of pretraining for Table 1's rows on 2 CPU cores "
                        "with native bf16, more for the uses' rows; in parts with --rows; split: Table 1's rows and "
                        "clusters at one budget on a 45,000 / 5,000 split of CIFAR-10's training images (train/, val/), "
                        "scored on all of val/; mnist: the IWAE paper's Table 1 with its own model on MNIST")
    p.add_argument("--dry_run", action="store_true", help="print every command with its estimated GPU-hours")
    p.add_argument("--data_root", default="data",
                   help="paper: a folder holding cifar10/, stl10/ and imagenet/; quick, small and split without "
                        "--data_path: where cifar10-mini or cifar10-split is made from cifar10/ (CIFAR-10, downloaded "
                        "there if absent)")
    p.add_argument("--data_path", default=None,
                   help="quick, small, split: any ImageFolder tree with train/ and val/ (default DATA_ROOT/cifar10-mini: "
                        "4,085 images in train/ and 1,000 in val/, all from CIFAR-10's training batches; split: "
                        "DATA_ROOT/cifar10-split, CIFAR-10's training set split 45,000 / 5,000 as aavae.py --dataset "
                        "cifar10 splits it, its test set unread)")
    p.add_argument("--places_path", default=None, help="paper: an ImageFolder tree of Places205 (Table 3)")
    p.add_argument("--subset_dir", default=None,
                   help="Table 2: a folder holding SimCLR's ImageNet label lists 1percent.txt and 10percent.txt "
                        "(the paper's subsets); without it, fine-tuning uses a seeded per-class subset")
    p.add_argument("--nproc", type=int, default=1, help="processes per run (torchrun) ")
    p.add_argument("--output_dir", default=None, help="default runs/all-PROFILE")
    p.add_argument("--report_only", action="store_true", help="write the tables from what has run so far")
    p.add_argument("--in_process", action="store_true", help=argparse.SUPPRESS)  # tests: no interpreter per step
    p.add_argument("--quick_steps", type=int, default=8, help="quick: pretraining steps per run")
    p.add_argument("--small_epochs", type=int, default=None,
                   help=f"small, split: pretraining epochs per run (default 30 and {SPLIT_EPOCHS})")
    p.add_argument("--label_evals", action=argparse.BooleanOptionalAction, default=None,
                   help="small: Table 2 at the small budget (fine-tuning and the probe on 1 %% and 10 %% of train/'s "
                        "labels) and k-means clusters, for the rows of Table 1 and the controls (their checkpoints are "
                        "needed: --no-label_evals for a folder whose runs are done but not kept; default on for small, "
                        "off for split)")
    p.add_argument("--rows", default=None, help="small, split, mnist: the rows to run, comma-separated (default all: "
                   + ",".join(SMALL_ALL) + "; split: Table 1's, " + ",".join(SPLIT_ALL) + "; mnist: "
                   + ",".join(MNIST_ALL) + ")")
    p.add_argument("--pretrain_args", default="",
                   help="small, split, mnist: flags added to every pretraining run, e.g. '--lr 1e-3 --warmup_epochs 0' (a single "
                        "flag as --pretrain_args=--flag, which argparse would otherwise take for one of its own)")
    p.add_argument("--holdout", type=int, default=0,
                   help="small, mnist: score on N images held out of train/ (a seeded draw) instead of val/, "
                        "to choose a recipe without looking at val/")
    p.add_argument("--mnist_passes", type=int, default=MNIST_PASSES,
                   help="mnist: passes over the training set per row, the first stages of the paper's schedule (40: "
                        "stages 0-3; 121: 0-4; the paper's 3,280: 0-7)")
    p.add_argument("--mnist_aae_epochs", type=int, default=MNIST_AAE_EPOCHS,
                   help="mnist: epochs of each AAE use's row")
    p.add_argument("--finetune_choice", action="store_true",
                   help=f"split: choose Table 2's fine-tuning recipe first (nothing else): {', '.join(FINETUNE_CHOICE_ROWS)} "
                        f"(their runs pretrained as usual) fine-tuned with each recipe of {', '.join(FINETUNE_GRID)} (x Table 2's "
                        f"backbone and head lr) on {FINETUNE_CHOICE_HOLDOUT:,} images held out of train/, never val/")
    args = p.parse_args(argv)
    mini = args.profile in ("quick", "small", "split") and not args.data_path
    if mini:  # cifar10-mini or cifar10-split, made from CIFAR-10 under DATA_ROOT/cifar10 (downloaded there if absent)
        args.data_path = os.path.join(args.data_root, "cifar10-split" if args.profile == "split" else "cifar10-mini")
    if args.profile == "mnist":
        return mnist_main(p, args, argv)
    small_only = [f for f, v in (("--rows", args.rows), ("--pretrain_args", args.pretrain_args), ("--holdout", args.holdout)) if v]
    if args.profile not in ("small", "split") and small_only:
        p.error(f"{', '.join(small_only)}: only with --profile small or split")
    if args.finetune_choice and args.profile != "split":
        p.error("--finetune_choice: only with --profile split (the small profile's choice is in results/small-cpu-30-labels)")
    allowed = SPLIT_ALL if args.profile == "split" else SMALL_ALL
    if args.finetune_choice and args.rows is not None:
        p.error(f"--finetune_choice fine-tunes {', '.join(FINETUNE_CHOICE_ROWS)} (their rows' pretraining, nothing else): "
                "no --rows with it")
    rows = (FINETUNE_CHOICE_ROWS if args.finetune_choice else allowed) if args.rows is None else \
        [r.strip() for r in args.rows.split(",") if r.strip()]
    if not rows or set(rows) - set(allowed):
        p.error(f"--rows {args.rows!r}: choose among {', '.join(allowed)}")
    args.rows = [r for r in allowed if r in rows]
    args.small_epochs = args.small_epochs or (SPLIT_EPOCHS if args.profile == "split" else 30)
    args.label_evals = args.profile == "small" if args.label_evals is None else args.label_evals
    if args.profile == "split" and args.label_evals and SPLIT_FINETUNE is None:
        p.error("--label_evals on the split profile waits for its fine-tuning recipe, chosen by --finetune_choice on "
                "images held out of train/ (experiments/grid.py: SPLIT_FINETUNE)")
    args.pretrain_args = shlex.split(args.pretrain_args)
    args.output_dir = args.output_dir or os.path.join("runs", f"all-{args.profile}")
    if mini and (args.holdout or args.finetune_choice) and not (args.dry_run or args.report_only):  # made of its files
        make_mini(args)
    if args.holdout:
        args.data_path = holdout_split(args.data_path, args.holdout, os.path.join(args.output_dir, "holdout-data"),
                                       create=not args.dry_run)
    if args.finetune_choice:  # the hold-out tree and its label lists, made of train/ alone
        choice = os.path.join(args.output_dir, "finetune-choice")
        tree = holdout_split(args.data_path, FINETUNE_CHOICE_HOLDOUT, os.path.join(choice, "holdout-data"),
                             create=not args.dry_run)
        if not (args.dry_run or args.report_only):
            label_subsets(tree, os.path.join(choice, "label-subsets"))
    g = build_grid(args)
    if mini and not args.dry_run and not args.report_only and not all(map(done, g.steps)):
        make_mini(args)  # only when a step will read it: a copied results folder with every step done needs none
    if args.dry_run:
        total = 0.0
        for st in g.steps:
            total += st.hours
            print(f"# {st.kind}, ~{st.hours:.2f} GPU-h\n{shlex.join(st.cmd)}")
        print(f"# {len(g.steps)} commands, ~{total:.0f} GPU-hours at an assumed {ASSUMED_TFLOPS:g} TFLOP/s per GPU")
        return g
    if not args.report_only:
        labelled = args.label_evals and set(args.rows) & set(LABEL_ROWS) or any("semi" in r for r in args.rows)
        if args.profile in ("small", "split") and labelled and not all(map(done, g.steps)):
            label_subsets(args.data_path, os.path.join(args.output_dir, "label-subsets"))
        run_grid(g, args, argv)
    from experiments.report import have_matplotlib, report, report_choice, report_small  # it imports the grid's tables
    if args.finetune_choice:  # its own page, beside the profile's tables (which it leaves as they are)
        report_choice(g, args)
        return g
    (report_small if args.profile in ("small", "split") else report)(g, args)
    if not have_matplotlib():  # the tables are written either way; the figures wait for it
        print(f"matplotlib is not installed, so {'figures.png' if args.profile in ('paper', 'quick') else 'curves.png'} was not "
              "drawn: pip install matplotlib, then the same command with --report_only", flush=True)
    return g


def mnist_holdout(source, n, out, create=True, seed=0):
    """An MNIST folder at out whose train and val are MNIST's training split at source (its IDX files) cut in two: n
    images (a seeded draw) become val, the rest train; source's val is not read. Returns out. A folder made earlier
    from another source, n or seed is refused."""
    manifest = {"source": os.path.abspath(source), "holdout": n, "seed": seed}
    if made_already(out, manifest) or not create:
        return out
    import numpy as np
    import torch
    from util import data, misc
    try:
        images, labels = data.read_mnist(source, "train")
    except misc.UserError as e:
        sys.exit(f"run_all: {e}")
    if not 0 < n < len(labels):
        sys.exit(f"run_all: --holdout {n} must be between 1 and {len(labels) - 1}, the training images less one")
    held = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[held] = False
    tmp = out + ".partial"  # built aside and renamed: an interrupted build leaves no half folder at out
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for split, idx in (("train", keep.nonzero()[:, 0]), ("val", held)):
        for name, array in zip(data.MNIST_FILES[split], (images[idx, 0].numpy(), labels[idx].numpy().astype(np.uint8))):
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data.IDX_MAGIC[array.ndim].to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
                        + array.tobytes())
    with open(os.path.join(tmp, "holdout.json"), "w") as f:
        json.dump({**manifest, "val": held.tolist()}, f)
    os.rename(tmp, out)
    return out


def mnist_main(p, args, argv):
    """--profile mnist: its rows (default all), MNIST at --data_path (default DATA_ROOT/mnist, where torchvision
    downloads it if it has no IDX files), the grid, its report (experiments/report.py: report_mnist)."""
    others = [f for f, v in (("--finetune_choice", args.finetune_choice), ("--small_epochs", args.small_epochs)) if v]
    if others:
        p.error(f"{', '.join(others)}: not with --profile mnist")
    rows = MNIST_ALL if args.rows is None else [r.strip() for r in args.rows.split(",") if r.strip()]
    if not rows or set(rows) - set(MNIST_ALL):
        p.error(f"--rows {args.rows!r}: choose among {', '.join(MNIST_ALL)}")
    if args.mnist_passes < 1 or args.mnist_aae_epochs < 1:
        p.error("--mnist_passes and --mnist_aae_epochs must be positive")
    args.rows = [r for r in MNIST_ALL if r in rows]
    args.pretrain_args = shlex.split(args.pretrain_args)
    args.data_path = args.data_path or os.path.join(args.data_root, "mnist")
    args.output_dir = args.output_dir or os.path.join("runs", "all-mnist")
    if args.holdout:  # a recipe chosen without val: train's own images held out in its place
        args.data_path = mnist_holdout(args.data_path, args.holdout, os.path.join(args.output_dir, "holdout-data"),
                                       create=not args.dry_run)
    if any(MNIST_AAE_ROWS.get(r, [None, None])[1] == "cluster_aae" for r in args.rows):  # the rule's own images
        args.rule_data = mnist_holdout(args.data_path, MNIST_RULE_BANK, os.path.join(args.output_dir, "rule-data"),
                                       create=not args.dry_run)
    g = build_grid(args)
    if args.dry_run:
        for st in g.steps:
            print(f"# {st.kind}\n{shlex.join(st.cmd)}")
        print(f"# {len(g.steps)} commands")
        return g
    if not args.report_only:
        run_grid(g, args, argv)
    from experiments.report import report_mnist
    report_mnist(g, args)
    return g


if __name__ == "__main__":
    main()

