"""The experiment grid behind run_all.sh: every table and figure of the paper (Tables 1-3, Figs. 2-5), as
pretraining runs of aavae.py and evaluations of linear_eval.py, then the tables beside the paper's numbers.

    python experiments.py --profile paper --data_root /data --dry_run     # every command, with GPU-hours
    python experiments.py --profile quick --data_path data/cifar10-mini --output_dir R

Each run has its own directory under OUTPUT/runs, each evaluation under OUTPUT/evals. A step that finished
is skipped (a marker file, or its result.json); an interrupted one is simply run again, and aavae.py (or
linear_eval.py, for a probe or fine-tuning) resumes it from its checkpoint. Runs whose accuracy is followed
over training (Fig. 2) are pretrained in segments: raising --epochs (or --max_steps) continues the same run,
and a probe follows each segment.
"""
import argparse
import contextlib
import csv
import importlib
import json
import math
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ["ae", "aaae", "vae", "aavae"]
REGULARISERS = METHODS + ["iwae", "aa_iwae", "aae", "aa_aae"]

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
    small profile has a grid of its own: build_small_grid)."""
    if args.profile == "small":
        return {"datasets": {"folder": args.data_path}, "main": "folder",
                # the paper's recipe (Adam, lr 2.5e-4, constant after warm-up, ResNet-18 + decoder18 here) but for
                # its length, a warm-up of one epoch instead of ten, and the lr's base batch 128 instead of 256
                "pretrain": {"folder": ["--encoder", "resnet18", "--batch_size", "128", "--base_batch", "128",
                                        "--warmup_epochs", "1", "--val_every", "1", "--save_every", "1",
                                        "--val_size", "0", "--val_samples", "4", "--log_every", "10", "--workers", "2"]},
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
    return {
        "datasets": {"folder": data}, "main": "folder", "semi": "folder",
        "pretrain": {"folder": ["--encoder", "resnet18", "--batch_size", "32", "--base_batch", "32", "--val_size", "64",
                                "--val_samples", "2", "--warmup_epochs", "0", "--workers", "2"]},
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

    def launcher(self, script):
        """Commands are kept as a user would type them in the repository root; runnable() resolves them.
        Several processes get --sync_bn: BatchNorm then sees the whole global batch, as on the paper's one GPU
        (a per-process batch of 256 / N would change the statistics the tables are made with)."""
        if self.args.nproc > 1:
            return ["torchrun", "--standalone", f"--nproc_per_node={self.args.nproc}", script, "--sync_bn"]
        return ["python", script]

    def pretrain(self, name, dataset, extra=(), frac=1.0, seed=0, script="aavae.py"):
        """The pretraining run `name` up to fraction frac of its length: a run followed over training is
        pretrained in segments, each continuing the last (raising --epochs or --max_steps resumes it). script:
        aae_uses.py for the adversarial autoencoder's uses."""
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
        cmd = self.launcher("linear_eval.py") + source + [
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
# The adversarial autoencoder's other uses (aae_uses.py) at the same budget, beside the rows above: each trains
# with the profile's recipe, then gets the probe and kNN on its encoder as every row, and its own evaluation
# (linear_eval.py --mode head, grid or map). The semi-supervised runs read the label lists of Table 2's rows.
USES_ROWS = {**{f"{aa}semi-aae-{pct}": ["--method", f"{aa.replace('-', '_')}semi_aae", "--subset_file", pct]
                for pct in ("1percent", "10percent") for aa in ("", "aa-")},
             **{f"{aa}cluster-aae-k{k}": ["--method", f"{aa.replace('-', '_')}cluster_aae", "--clusters", str(k)]
                for k in (16, 10) for aa in ("", "aa-")},
             "aa-supervised-aae": ["--method", "aa_supervised_aae"],
             "aa-dimred-aae": ["--method", "aa_dimred_aae", "--latent_dim", "2"]}
USES_EVAL = {"semi": "head", "cluster": "head", "supervised": "grid", "dimred": "map"}
uses_mode = lambda row: USES_EVAL[next(k for k in USES_EVAL if k in row)]  # a uses row's own evaluation
SMALL_ALL = ["random init", *SMALL_ROWS, *USES_ROWS]  # --rows' names, in the table's order
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


def build_small_grid(args):
    """The small profile: Table 1's encoders and the two controls at equal budget on one ImageFolder dataset,
    followed over training by the run's own monitor, then a cached-feature linear probe and kNN on val/, and
    Fig. 5's similarity for VAE and AAVAE. The authors' AAAE (reconstructing the augmented view) is its own row.
    --rows keeps some rows, --pretrain_args changes the recipe of every run, and --holdout replaces val/ by
    images of train/ (holdout_split), so that a recipe is chosen without looking at val/."""
    g = Grid(args)
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
    for row, extra in USES_ROWS.items():
        if row not in args.rows:
            continue
        name, extra = f"folder-{row}", list(extra)
        if "--subset_file" in extra:  # the list Table 2's rows use (label_subsets writes it)
            at = extra.index("--subset_file") + 1
            extra[at] = os.path.join(args.output_dir, "label-subsets", f"{extra[at]}.txt")
        run = g.pretrain(name, "folder", extra + args.pretrain_args, script="aae_uses.py")
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
    return g


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
    import data
    samples = torchvision.datasets.ImageFolder(os.path.join(data_path, "train")).samples
    names = ["/".join(p.replace(os.sep, "/").split("/")[-2:]) for p, _ in samples]
    os.makedirs(out, exist_ok=True)
    for frac, path in paths.items():
        if not os.path.exists(path):
            keep = data.per_class_subset(torch.tensor([y for _, y in samples]), frac, seed)
            with open(path + ".tmp", "w") as f:
                f.writelines(names[i] + "\n" for i in keep.tolist())
            os.replace(path + ".tmp", path)


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
    if os.path.exists(out):
        if read_json(os.path.join(out, "holdout.json")) != manifest:
            sys.exit(f"run_all: {out} holds a hold-out split of other images; give another --output_dir")
        return out
    if not create:
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


def build_grid(args):
    if args.profile == "small":
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
        return subprocess.run(runnable(cmd), stdout=log, stderr=subprocess.STDOUT, cwd=HERE).returncode
    module = importlib.import_module(os.path.splitext(cmd[1])[0])
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            module.main(cmd[2:])
        except SystemExit as e:
            return e.code or 0
    return 0


def make_mini(args):
    """DATA_ROOT/cifar10-mini, made from CIFAR-10's training batches (downloaded first if absent) unless it is there."""
    if os.path.isdir(args.data_path):
        return
    print(f"making {args.data_path} from CIFAR-10's training batches in {os.path.join(args.data_root, 'cifar10')}",
          flush=True)
    import data
    import utils
    try:
        data.build_cifar10_mini(os.path.join(args.data_root, "cifar10"), args.data_path)
    except utils.UserError as e:
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
    record_run(args, argv, 0.0, timings, new=True)
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
        record_run(args, argv, time.time() - t0, timings)
        if code != 0:
            sys.exit(f"run_all: step {k + 1} failed (exit {code}); see {log_path}. Re-running the same command resumes here.")
        if st.kind == "pretrain":
            open(os.path.join(st.dir, st.marker), "w").close()
    print(f"all steps done in {(time.time() - t0) / 60:.1f} min", flush=True)


# ----------------------------------------------------------------------------------------------------
# Report: one markdown table per table/figure, with the paper's value and the difference where it has one.


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def validation(run_dir, at=None):
    """A run's validation line: the one at (key, value), e.g. ("step", 4), or else the last one."""
    try:
        with open(os.path.join(run_dir, "log.jsonl")) as f:
            vals = [r for r in map(json.loads, f) if "val_images" in r]
    except OSError:
        return {}
    if at:
        vals = [r for r in vals if abs(r[at[0]] - at[1]) < 1e-6]
    return vals[-1] if vals else {}


def fmt(v, digits=2):
    return "—" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def report(g, args):
    out = args.output_dir
    os.makedirs(out, exist_ok=True)
    records = []
    for c in g.cells:
        res = read_json(os.path.join(c.eval, "result.json")) or {}
        val = validation(c.run, c.at) if c.run else {}
        records.append({"table": c.table, "row": c.row, "col": c.col, "seed": c.seed, "top1": res.get("top1"),
                        "top5": res.get("top5"), "sim_same": res.get("sim_same"), "sim_diff": res.get("sim_diff"),
                        "active_units": val.get("val_active_units"), "val_bpd": val.get("val_bpd"), "eval": c.eval})
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(records, f, indent=1)
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)

    by = lambda table: [r for r in records if r["table"] == table]
    label = f"profile {args.profile}" + (f", data {args.data_path}" if args.profile == "quick" else "")
    probe_name = "kNN" if g.s["sweep_probe"] == "knn" else "linear"
    tables = {}

    rows, cols = by("table1"), list(g.s["datasets"])
    ref = {c: "cifar10" if c == "folder" else c for c in cols}  # quick: the paper's CIFAR-10 column as the reference
    lines = ["| method | " + " | ".join(f"{c} top-1 | paper ({ref[c]}) | Δ" for c in cols) + " |",
             "|---|" + "---|---|---|" * len(cols)]
    for m in [*TABLE1_ROWS, "random init"]:
        cells = []
        for c in cols:
            vals = [r["top1"] for r in rows if r["row"] == m and r["col"] == c and r["top1"] is not None]
            mean = sum(vals) / len(vals) if vals else None
            spread = f" ± {math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)):.2f}" if len(vals) > 1 else ""
            paper = paper_table1(m, ref[c])
            cells += [fmt(mean) + spread, fmt(paper), fmt(mean - paper if mean is not None and paper is not None else None)]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "aaae reconstructs the original x, as AAVAE's Eq. 3 does; the paper's AAAE row is the authors' "
              "model, which reconstructs the augmented view (aaae, augmented target), and its figures sit beside "
              "that row alone."]
    tables["table1"] = ("Table 1: linear-probe top-1 (%)", lines)

    rows = by("fig2")
    lines = [f"| log-scale | fraction of training | {probe_name} top-1 | held-out bpd |", "|---|---|---|---|"]
    lines += [f"| {r['row']} | {r['col']:g} | {fmt(r['top1'])} | {fmt(r['val_bpd'], 4)} |" for r in rows]
    tables["fig2"] = ("Fig. 2: learned vs fixed log-scale over training (paper: density estimation overfits, "
                      "representation quality does not drop)", lines)

    def sweep(name, title, header):
        lines = [f"| {header} | {probe_name} top-1 |", "|---|---|"]
        lines += [f"| {r['row']} | {fmt(r['top1'])} |" for r in by(name)]
        tables[name] = (title, lines)

    sweep("fig3", "Fig. 3: beta * KL added to AAVAE (paper: little change for beta << 1, worse for beta >= 1)", "beta")
    sweep("fig4_batch", "Fig. 4a: batch size, lr and warm-up scaled linearly (paper: nearly flat)", "batch")
    sweep("fig4_latent", "Fig. 4b: latent size (paper: nearly flat)", "latent_dim")
    sweep("fig4_decoder", "Fig. 4c: decoder depth (paper: nearly flat)", "decoder")
    sweep("fig4_logscale", "Fig. 4d: fixed log-scale drawn in [-5, 2] (paper: nearly flat)", "log_scale")

    lines = ["| method | same-image cosine | different-image cosine | gap | matrix |", "|---|---|---|---|---|"]
    for r in by("fig5"):
        gap = r["sim_same"] - r["sim_diff"] if r["sim_same"] is not None else None
        pic = os.path.relpath(os.path.join(r["eval"], "similarity.png"), out)
        lines.append(f"| {r['row']} | {fmt(r['sim_same'], 3)} | {fmt(r['sim_diff'], 3)} | {fmt(gap, 3)} | ![]({pic}) |")
    tables["fig5"] = ("Fig. 5: latent similarity of views (paper: AAVAE clusters per image; the VAE's latents all align)", lines)

    lines = ["| method | labelled images | 1 % labels | paper | Δ | 10 % labels | paper | Δ |",
             "|---|---|---|---|---|---|---|---|"]
    subset = "SimCLR's 1 % / 10 % lists" if args.subset_dir else "seeded per-class subset (the paper: SimCLR's lists)"
    for m in ("vae", "aavae"):
        cells = []
        for frac in (0.01, 0.1):
            v = next((r["top1"] for r in by("table2") if r["row"] == m and r["col"] == frac), None)
            paper = PAPER_TABLE2[m][frac]
            cells += [fmt(v), fmt(paper), fmt(v - paper if v is not None else None)]
        lines.append(f"| {m} | {subset} | " + " | ".join(cells) + " |")
    tables["table2"] = ("Table 2: semi-supervised fine-tuning top-1 (%)", lines)

    if by("table3"):
        lines = ["| method | Places205 top-1 | paper | Δ |", "|---|---|---|---|"]
        for r in by("table3"):
            lines.append(f"| {r['row']} | {fmt(r['top1'])} | {fmt(PAPER_PLACES[r['row']])} | "
                         f"{fmt(r['top1'] - PAPER_PLACES[r['row']] if r['top1'] is not None else None)} |")
        tables["table3"] = ("Table 3: Places205 linear probe of the ImageNet encoders (VOC07+12 detection is out of "
                            "scope: train detectron2's Faster R-CNN C4 on the exported encoder.pth)", lines)

    lines = ["| method | linear top-1 | kNN top-1 | active units | held-out bpd |", "|---|---|---|---|---|"]
    for m in REGULARISERS:
        lin = next((r for r in by("regularisers") if r["row"] == m and r["col"] == "linear"), {})
        knn = next((r for r in by("regularisers") if r["row"] == m and r["col"] == "knn"), {})
        lines.append(f"| {m} | {fmt(lin.get('top1'))} | {fmt(knn.get('top1'))} | {fmt(knn.get('active_units'))} | "
                     f"{fmt(knn.get('val_bpd'), 4)} |")
    tables["regularisers"] = ("Latent regularisers: which one gives the best representation?", lines)

    for name, (title, lines) in tables.items():
        with open(os.path.join(out, f"{name}.md"), "w") as f:
            f.write(f"# {title}\n\n_{label}_\n\n" + "\n".join(lines) + "\n")
    figures(records, out)
    print(f"wrote {len(tables)} tables to {out}/*.md, results.json and results.csv")
    return tables


def record_run(args, argv, seconds, steps=(), new=False):
    """OUTPUT/run.json: per invocation, the command, the code it ran (commit, dirty flag, library versions, as the
    invocation began: a checkout during a long part does not rewrite it), the machine (and whether its CPU computes
    bf16 natively), the minutes so far and each step's. new starts this invocation's record; otherwise the last one
    is brought up to date."""
    import platform

    import utils
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, "run.json")
    runs = (read_json(path) or {}).get("invocations", [])
    entry = {"command": "bash run_all.sh " + shlex.join(sys.argv[1:] if argv is None else argv),
             "provenance": utils.provenance() if new or not runs else runs[-1]["provenance"],
             "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
             f"{platform.processor() or platform.platform()}", "native_bf16": utils.native_bf16(),
             "minutes": round(seconds / 60, 1), "steps": list(steps)}
    runs = runs + [entry] if new or not runs else runs[:-1] + [entry]
    utils.save_atomic_json({"invocations": runs}, path)


def pixel_mse(nll, log_scale, pixels):
    """The mean squared error per pixel value implied by a Gaussian -log p(x|z) summed over `pixels` values
    with log-variance log_scale: the variational runs' reconstruction on the AE family's scale."""
    return 2 * math.exp(log_scale) * (nll / pixels - 0.5 * (log_scale + math.log(2 * math.pi)))


MONITOR_KEYS = ("val_linear_top1", "val_knn_top1", "val_recon", "val_active_units", "val_latent_snr")


def curves(run_dir):
    """Per-epoch rows of a run's log.jsonl: the mean training loss and reconstruction error (MSE per pixel
    value, for every method) of the epoch, and its validation line."""
    try:
        with open(os.path.join(run_dir, "log.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        pixels = 3 * read_json(os.path.join(run_dir, "args.json"))["image_size"] ** 2
    except (OSError, TypeError, KeyError):
        return []
    out, log_scale = {}, None
    for r in rows:
        epoch = math.ceil(r["epoch"] - 1e-9)
        e = out.setdefault(epoch, {"epoch": epoch, "losses": [], "mse": []})
        if "loss" in r:
            log_scale = r.get("log_scale")  # present for the Gaussian likelihood, whose recon is -log p(x|z)
            e["losses"].append(r["loss"])
            if "recon" in r:  # the controls reconstruct nothing
                e["mse"].append(r["recon"] if log_scale is None else pixel_mse(r["recon"], log_scale, pixels))
        elif "val_images" in r:  # a validation line
            e.update({k: r.get(k) for k in MONITOR_KEYS})
            if "val_recon" in r:
                e["val_recon_mse"] = r["val_recon"] if log_scale is None else pixel_mse(r["val_recon"], log_scale, pixels)
    mean = lambda v: sum(v) / len(v) if v else None
    return [{"epoch": e["epoch"], "loss": mean(e["losses"]), "recon_mse": mean(e["mse"]),
             "val_recon_mse": e.get("val_recon_mse"), **{k: e.get(k) for k in MONITOR_KEYS}} for _, e in sorted(out.items())]


SMALL_PAIRS = [("aavae", "aaae"), ("aavae", "vae"), ("simclr", "aavae"), ("supervised", "simclr")]
SMALL_SEEDS = {"aavae": "aavae-s1", "aaae": "aaae-s1"}


def binomial_se(top1, n):
    """The standard error (points) of an accuracy of top1 % over n test images, sqrt(p (100 - p) / n)."""
    return math.sqrt(top1 * (100 - top1) / n)


def paired_difference(a, b):
    """(mean, standard error) in points of a - b, two encoders' per-image hits (result.json's "correct") on the
    same test images: the paired error, smaller than the two rows' errors combined when the rows agree on
    which images are easy."""
    if not a or not b or len(a) != len(b):
        return None, None
    d = [x - y for x, y in zip(a, b)]
    n, m = len(d), sum(d) / len(d)
    return 100 * m, 100 * math.sqrt(sum((v - m) ** 2 for v in d) / (n - 1) / n)


def fmt_se(value, se, digits=2):
    return "—" if value is None else f"{value:.{digits}f} ± {se:.{digits}f}" if se is not None else fmt(value, digits)


def bootstrap_nmi(a, b=None, draws=1000, seed=0):
    """NMI of a result.json's test clusters and labels, and its bootstrap standard error over the test images
    (draws seeded resamples); with b, the same for NMI(a) - NMI(b) on the same resamples (paired)."""
    import numpy as np
    from clustering import nmi
    if not a or (b is not None and not b) or (b is not None and b["test_labels"] != a["test_labels"]):
        return None, None
    labels = np.asarray(a["test_labels"])
    parts = [np.asarray(r["test_clusters"]) for r in ([a] if b is None else [a, b])]
    stat = lambda idx: nmi(parts[0][idx], labels[idx]) - (nmi(parts[1][idx], labels[idx]) if b is not None else 0)
    rng = np.random.default_rng(seed)
    every = np.arange(len(labels))
    values = [stat(rng.integers(0, len(labels), len(labels))) for _ in range(draws)]
    return stat(every), float(np.std(values, ddof=1))


TABLE2_COLUMNS = [f"{mode} {pct}" for pct in LABEL_FRACTIONS.values() for mode in ("finetune", "linear")]
LABEL_PAIRS = [("aavae", "aaae"), ("aavae", "vae"), ("simclr", "aavae"), ("aavae", "random init"),
               ("supervised", "simclr"), ("aaae", "aaae-authors")]


def report_labels(g, args):
    """Table 2 at the small budget (fine-tuned and probed on 1 % and 10 % of the labels) and the clusters
    (majority, Hungarian, NMI), each with its standard error, what fine-tuning adds to each row's probe, and the
    paired differences of LABEL_PAIRS: markdown lines, and the records for results.json."""
    rows = [r for r in args.rows if r in LABEL_ROWS] if args.label_evals else []
    evals = {(c.row, c.col): read_json(os.path.join(c.eval, "result.json")) or {} for c in g.cells
             if c.table in ("table2", "cluster", "uses")}
    semi = [aa for aa in ("", "aa-") if any(f"{aa}semi-aae-{p}" in args.rows for p in LABEL_FRACTIONS.values())]
    clusters = [r for r in USES_ROWS if "cluster" in r and r in args.rows]
    if not rows and not semi and not clusters:
        return [], {}
    t2 = ["| encoder | " + " | ".join(f"{m}, {p.replace('percent', ' %')}" for p, m in
                                       ((c.split()[1], "fine-tuned" if c.startswith("finetune") else "probe")
                                        for c in TABLE2_COLUMNS)) + " |", "|---" * (1 + len(TABLE2_COLUMNS)) + "|"]
    cl = ["| encoder | majority label top-1 | Hungarian top-1 | NMI | clusters |", "|---|---|---|---|---|"]
    rec2, recc = [], []
    for row in rows:
        cells, rec = [], {"row": row, "label": SMALL_LABELS.get(row, row)}
        for col in TABLE2_COLUMNS:
            r = evals.get((row, col), {})
            top1, n = r.get("top1"), r.get("test_images")
            se = binomial_se(top1, n) if top1 is not None and n else None
            cells.append(fmt_se(top1, se))
            rec[col] = {"top1": top1, "se": se, "train_images": r.get("train_images")}
        t2.append(f"| {SMALL_LABELS.get(row, row)} | " + " | ".join(cells) + " |")
        rec2.append(rec)
    for aa in semi:  # the semi-supervised AAE's own classifier, trained with the same labels during pretraining
        label = f"{aa}semi-supervised AAE, its y head (in the fine-tuned columns)"
        cells, rec = [], {"row": f"{aa}semi-aae", "label": label, "y_head": True}
        for col in TABLE2_COLUMNS:
            mode, pct = col.split()
            r = evals.get((f"{aa}semi-aae-{pct}", "head"), {}) if mode == "finetune" else {}
            top1, n = r.get("top1"), r.get("test_images")
            se = binomial_se(top1, n) if top1 is not None and n else None
            cells.append(fmt_se(top1, se) if mode == "finetune" else "—")
            rec[col] = {"top1": top1, "se": se}
        t2.append(f"| {label} | " + " | ".join(cells) + " |")
        rec2.append(rec)
    kmeans = [(row, "kmeans", SMALL_LABELS.get(row, row)) for row in rows]
    kmeans += [("aavae", "kmeans k16", "aavae, K = 16")] if evals.get(("aavae", "kmeans k16")) else []
    for row, col, label in kmeans + [(r, "head", f"{r}: the AAE's y head") for r in clusters]:
        r = evals.get((row, col), {})
        n = r.get("test_images")
        acc = {k: (r.get(f"{k}_top1"), binomial_se(r[f"{k}_top1"], n) if r.get(f"{k}_top1") is not None else None)
               for k in ("majority", "hungarian")}
        nmi = bootstrap_nmi(r)
        cl.append(f"| {label} | {fmt_se(*acc['majority'])} | {fmt_se(*acc['hungarian'])} | "
                  f"{fmt_se(*nmi, digits=3)} | {fmt(r.get('clusters'))} |")
        recc.append({"row": row, "label": label, "majority_top1": acc["majority"], "hungarian_top1": acc["hungarian"],
                     "nmi": nmi, "clusters": r.get("clusters")})
    hit = lambda row, col, key="correct": evals.get((row, col), {}).get(key)
    gains = ["| encoder | " + " | ".join(f"fine-tuned - probe, {p.replace('percent', ' %')}" for p in LABEL_FRACTIONS.values())
             + " |", "|---" * (1 + len(LABEL_FRACTIONS)) + "|"]
    gain_recs = []
    for row in rows:  # the same labelled images, the same val/ images: paired
        d = {pct: paired_difference(hit(row, f"finetune {pct}"), hit(row, f"linear {pct}")) for pct in LABEL_FRACTIONS.values()}
        gains.append(f"| {SMALL_LABELS.get(row, row)} | " + " | ".join(fmt_se(*v) for v in d.values()) + " |")
        gain_recs.append({"row": row, **d})
    pairs = ["| difference | " + " | ".join(t2[0].split(" | ")[1:]).rstrip(" |") + " | clusters, majority | Hungarian | NMI |",
             "|---" * (4 + len(TABLE2_COLUMNS)) + "|"]
    pair_recs = []
    for a, b in LABEL_PAIRS:
        if a not in rows or b not in rows:
            continue
        d = {col: paired_difference(hit(a, col), hit(b, col)) for col in TABLE2_COLUMNS}
        d["majority"] = paired_difference(hit(a, "kmeans"), hit(b, "kmeans"))
        d["hungarian"] = paired_difference(hit(a, "kmeans", "hungarian_correct"), hit(b, "kmeans", "hungarian_correct"))
        d["nmi"] = bootstrap_nmi(evals.get((a, "kmeans")), evals.get((b, "kmeans")))
        pairs.append(f"| {a} - {b} | " + " | ".join(fmt_se(*d[c]) for c in TABLE2_COLUMNS + ["majority", "hungarian"])
                     + f" | {fmt_se(*d['nmi'], digits=3)} |")
        pair_recs.append({"a": a, "b": b, **d})
    lists = {pct: os.path.join(args.output_dir, "label-subsets", f"{pct}.txt") for pct in LABEL_FRACTIONS.values()}
    subsets = {pct: sum(1 for line in open(path) if line.strip()) if os.path.exists(path) else None
               for pct, path in lists.items()}
    lines = ["# Table 2 at the small budget: fine-tuned and probed on the same labelled images", "",
             f"Labelled images of train/: {subsets['1percent']} (1 %) and {subsets['10percent']} (10 %), the lists in "
             f"label-subsets/; every row scored on all of {scored(args)}. Fine-tuned: the whole encoder and a linear head, "
             f"{SMALL_FINETUNE_EPOCHS[0.01]} epochs, the head at Table 2's lr and the encoder at {SMALL_BACKBONE_LR_SCALE:g} "
             "of Table 2's; probe: the cached-feature linear head of the frozen encoder, trained on the same images.",
             "", *t2, "",
             *(["What fine-tuning adds to the frozen probe on the same labelled images (paired on the same test images):",
                "", *gains, ""] if rows else []),
             "# Cluster accuracy: k-means on the frozen features, read against the labels", "",
             "k-means on train/'s L2-normalised pooled features, k = the classes; each cluster's majority training label, "
             f"and the best one-to-one matching of clusters to classes on train/, both scored on {scored(args)} through "
             f"the nearest centroid; NMI of their clusters and labels (± from 1,000 bootstrap resamples of {scored(args)})."
             + (" The clustering AAE's rows read its y head's argmax on train/ the same way (aae_uses.py; K as named)."
                if clusters else ""),
             "", *cl, "",
             "# Paired differences, Table 2 and clusters", "", *pairs, ""]
    return lines, {"table2": rec2, "finetune_over_probe": gain_recs, "clusters": recc, "label_paired_differences": pair_recs}


def report_uses(g, args):
    """The adversarial autoencoder's uses at the small budget: the probe and kNN on each run's encoder (as Table
    1's rows), its own evaluation, and the paired differences with AAVAE on the same images: its y head against
    AAVAE fine-tuned on the same labels, its clusters against k-means on AAVAE's features at the same K, its 2-D
    map against AAVAE's; and each augmented use against its plain twin (the encoder seeing x+ or x). Markdown lines
    and the records for results.json."""
    rows = [r for r in USES_ROWS if r in args.rows]
    if not rows:
        return [], {}
    evals = {(c.row, c.col): read_json(os.path.join(c.eval, "result.json")) or {} for c in g.cells
             if c.table in ("uses", "table1", "table2", "cluster")}
    with_se = lambda r, key="top1": (r.get(key), binomial_se(r[key], r["test_images"]) if r.get(key) is not None else None)
    lines = ["| run | linear top-1 (cached features) | kNN top-1 | its own evaluation |", "|---|---|---|---|"]
    records, pairs = [], []
    for row in rows + (["aavae"] if evals.get(("aavae", "map")) else []):
        lin, knn = evals.get((row, "linear"), {}), evals.get((row, "knn"), {})
        mode = "map" if row == "aavae" else uses_mode(row)
        own = evals.get((row, mode), {})
        if mode == "grid":
            text = (f"val/ MSE decoded with the image's own label {fmt(own.get('recon_own_label'), 4)}, with the next "
                    f"class's {fmt(own.get('recon_other_label'), 4)} (grid.png)")
        elif mode == "map":
            text = f"5-NN top-1 in the 2-D map of {own.get('latent', '?')} ({own.get('map', '?')}): {fmt_se(*with_se(own))}"
        elif "semi" in row:
            text = f"y head top-1 {fmt_se(*with_se(own))}"
        else:
            text = (f"y head's clusters: majority {fmt_se(*with_se(own, 'majority_top1'))}, "
                    f"Hungarian {fmt_se(*with_se(own, 'hungarian_top1'))}, NMI {fmt_se(*bootstrap_nmi(own), digits=3)}")
        lines.append(f"| {row} | {fmt_se(*with_se(lin))} | {fmt_se(*with_se(knn))} | {text} |")
        records.append({"row": row, "linear": with_se(lin), "knn": with_se(knn), "own": mode,
                        **{k: own.get(k) for k in ("top1", "majority_top1", "hungarian_top1", "nmi", "recon_own_label",
                                                   "recon_other_label", "clusters", "clusters_used") if k in own}})
        # the paired differences with AAVAE on the same images
        base = evals.get(("aavae", "kmeans" if row.endswith("k10") else "kmeans k16"))  # k-means at the row's K
        if "semi" in row:
            pct = row.rsplit("-", 1)[1]
            against = [("y head - AAVAE fine-tuned on the same labels", own, "correct", evals.get(("aavae", f"finetune {pct}")), "correct"),
                       ("y head - AAVAE's probe on the same labels", own, "correct", evals.get(("aavae", f"linear {pct}")), "correct")]
        elif "cluster" in row:
            against = [(f"majority - k-means on AAVAE (K = {(base or {}).get('clusters')})", own, "correct", base, "correct"),
                       ("Hungarian - the same", own, "hungarian_correct", base, "hungarian_correct")]
        elif mode == "map" and row != "aavae":
            against = [("5-NN in the map - AAVAE's map", own, "correct", evals.get(("aavae", "map")), "correct")]
        else:
            against = []
        if row != "aavae":  # what the use's phases did to the encoder's features
            against += [("probe - AAVAE's probe", lin, "correct", evals.get(("aavae", "linear")), "correct"),
                        ("kNN - AAVAE's kNN", knn, "correct", evals.get(("aavae", "knn")), "correct")]
        for label, mine, key, other, other_key in against:  # (label, this run's result, its key, AAVAE's, its key)
            d = paired_difference(mine.get(key), (other or {}).get(other_key))
            if d[0] is not None:
                pairs.append(f"| {row} | {label} | {fmt_se(*d)} |")
                records[-1].setdefault("paired", {})[label] = d
        if "cluster" in row:
            d = bootstrap_nmi(own, base)
            if d[0] is not None:
                pairs.append(f"| {row} | NMI - k-means on AAVAE's | {fmt_se(*d, digits=3)} |")
                records[-1].setdefault("paired", {})["NMI - k-means on AAVAE's"] = d
    lens = []  # the project's lens: each augmented use against its plain twin, the same images and labels
    for row in rows:
        plain = row.removeprefix("aa-")
        if plain == row or plain not in rows:
            continue
        mine, theirs = (evals.get((r, uses_mode(r)), {}) for r in (row, plain))
        own = [("y head", "correct")] if "semi" in row else [("majority", "correct"), ("Hungarian", "hungarian_correct")]
        for label, a, b, key in [(name, mine, theirs, key) for name, key in own] + [
                ("probe", evals.get((row, "linear")), evals.get((plain, "linear")), "correct"),
                ("kNN", evals.get((row, "knn")), evals.get((plain, "knn")), "correct")]:
            d = paired_difference((a or {}).get(key), (b or {}).get(key))
            if d[0] is not None:
                lens.append(f"| {row} | {label} - {plain}'s | {fmt_se(*d)} |")
                records[rows.index(row)].setdefault("paired", {})[f"{label} - {plain}'s"] = d
        if "cluster" in row:
            d = bootstrap_nmi(mine, theirs)
            if d[0] is not None:
                lens.append(f"| {row} | NMI - {plain}'s | {fmt_se(*d, digits=3)} |")
                records[rows.index(row)].setdefault("paired", {})[f"NMI - {plain}'s"] = d
    out = ["# The adversarial autoencoder's uses at the same budget (aae_uses.py)", "",
           f"Each run pretrained as the rows above (its use's phases added), then probed on its encoder; its own "
           f"evaluation on {scored(args)}: the semi-supervised y head (trained with the label lists of Table 2's rows), "
           "the clustering y head read as k-means' clusters are, the supervised decoder with each image's own and "
           "another class's label, the 2-D map's leave-one-out 5-nearest-neighbour vote.", "", *lines, ""]
    if pairs:
        out += ["# Paired differences, the uses against AAVAE", "", "| run | difference | points (NMI: value) |",
                "|---|---|---|", *pairs, ""]
    if lens:
        out += ["# Paired differences, each augmented use against the plain one (the encoder sees x+, the decoder "
                "reconstructs x)", "", "| run | difference with the plain run | points (NMI: value) |", "|---|---|---|", *lens, ""]
    return out, {"uses": records}


FEATURES = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


def units_of(run):
    """What a row's active units count: the autoencoders' latent z (its mean), SimCLR's projection, or the
    supervised encoder's pooled features h, whichever the run's encode() returns, with its size."""
    a = read_json(os.path.join(run, "args.json")) if run else None
    if not a:
        return None
    if a["method"] == "supervised":
        return f"{FEATURES[a['encoder']]} pooled h"
    return f"{a['latent_dim']} {'projection' if a['method'] == 'simclr' else 'z'}"


def scored(args):
    """What the small profile's tables score on: val/, or with --holdout the images held out of train/."""
    return "the val/ images" if not args.holdout else f"the {args.holdout} images held out of train/"


def report_small(g, args):
    """The small profile's Table 1: cached-feature linear probe and kNN top-1 with their standard errors,
    active units and bits per dimension, beside the paper's CIFAR-10 column; the paired differences the
    paper's question turns on, on the same test images; the seed-to-seed spread; Fig. 5's similarities; and
    the curves of the runs' monitor over training (curves.csv, and curves.png with matplotlib)."""
    out = args.output_dir
    os.makedirs(out, exist_ok=True)
    cell = lambda row, col: next((c for c in g.cells if c.table in ("table1", "fig5") and c.row == row and c.col == col), None)
    table1_row = {name: row for row, name in TABLE1_NAMES.items()}  # aaae-authors: the paper's AAAE is that model
    paper_row = lambda row: PAPER_SIMCLR if row == "simclr" else paper_table1(table1_row.get(row, row), "cifar10")
    lines = ["| encoder | linear top-1 (cached features) | kNN top-1 | active units (of the code measured) | "
             "bits per dim | paper, CIFAR-10 linear |",
             "|---|---|---|---|---|---|"]
    results, records, curve_rows = {}, [], []
    for row in (r for r in args.rows if r not in USES_ROWS):
        lin, knn = (read_json(os.path.join(cell(row, c).eval, "result.json")) or {} for c in ("linear", "knn"))
        results[row] = {"linear": lin, "knn": knn}
        run = cell(row, "linear").run
        val = validation(run) if run else {}
        rec = {"row": row, "test_images": lin.get("test_images"), "active_units": val.get("val_active_units"),
               "active_units_of": units_of(run), "val_bpd": val.get("val_bpd"), "paper_cifar10": paper_row(row)}
        for name, r in (("linear", lin), ("knn", knn)):
            top1, n = r.get("top1"), r.get("test_images")
            rec[f"{name}_top1"], rec[f"{name}_se"] = top1, binomial_se(top1, n) if top1 is not None and n else None
        lines.append(f"| {SMALL_LABELS.get(row, row)} | {fmt_se(rec['linear_top1'], rec['linear_se'])} | "
                     f"{fmt_se(rec['knn_top1'], rec['knn_se'])} | "
                     + (f"{rec['active_units']} of {rec['active_units_of']}" if rec["active_units"] is not None else "—")
                     + f" | {fmt(rec['val_bpd'], 4)} | "
                     f"{fmt(rec['paper_cifar10'])} |")
        records.append(rec)
        curve_rows += [{"encoder": row, **r} for r in (curves(run) if run else [])]

    hits = lambda row, probe: results.get(row, {}).get(probe, {}).get("correct")
    both = lambda a, b: tuple(paired_difference(hits(a, p), hits(b, p)) for p in ("linear", "knn"))
    diffs = ["| difference | linear top-1 (points) | kNN top-1 (points) | "
             "the same with AAVAE and AAAE of seed 1 (linear, kNN) |",
             "|---|---|---|---|"]
    pair_records = []
    for a, b in SMALL_PAIRS:
        if a not in results or b not in results:
            continue
        lin, knn = both(a, b)
        a1, b1 = SMALL_SEEDS.get(a, a), SMALL_SEEDS.get(b, b)
        seed1 = both(a1, b1) if (a1, b1) != (a, b) and a1 in results and b1 in results else None
        diffs.append(f"| {a} - {b} | {fmt_se(*lin)} | {fmt_se(*knn)} | "
                     + (f"{fmt_se(*seed1[0])}, {fmt_se(*seed1[1])}" if seed1 else "—") + " |")
        pair_records.append({"a": a, "b": b, "linear": lin, "knn": knn, "seed1": seed1})
    seeds = ["| encoder | linear, seed 0 | seed 1 | seed 1 - seed 0 | kNN, seed 0 | seed 1 | seed 1 - seed 0 |",
             "|---|---|---|---|---|---|---|"]
    seed_records = []
    for row, other in SMALL_SEEDS.items():
        if row in results and other in results:
            cells, rec = [], {"row": row, "seed1_row": other}
            for probe in ("linear", "knn"):
                t0, t1 = results[row][probe].get("top1"), results[other][probe].get("top1")
                diff = paired_difference(hits(other, probe), hits(row, probe))
                cells += [fmt(t0), fmt(t1), fmt_se(*diff)]
                rec[probe] = {"seed0": t0, "seed1": t1, "seed1_minus_seed0": diff}
            seeds.append(f"| {row} | " + " | ".join(cells) + " |")
            seed_records.append(rec)
    if not seed_records:
        seeds = ["No seed-1 run among these rows (`aavae-s1`, `aaae-s1`)."]

    fig5 = [f"| method | same-image cosine, all of {scored(args)} | different images | same image, 8 images x 4 views | "
            "different images | gap (8 images) |", "|---|---|---|---|---|---|"]
    for m in (m for m in ("vae", "aavae") if m in args.rows):
        r = read_json(os.path.join(cell(m, "similarity").eval, "result.json")) or {}
        val = validation(cell(m, "linear").run)
        gap = r["sim_same"] - r["sim_diff"] if r.get("sim_same") is not None else None
        fig5.append(f"| {m} | {fmt(val.get('val_sim_same'), 3)} | {fmt(val.get('val_sim_diff'), 3)} | "
                    f"{fmt(r.get('sim_same'), 3)} | {fmt(r.get('sim_diff'), 3)} | {fmt(gap, 3)} |")
    label_lines, label_records = report_labels(g, args)
    uses_lines, uses_records = report_uses(g, args)
    label = f"profile small, data {args.data_path}, {args.small_epochs} epochs per run"
    if args.holdout:
        label += f", scored on {args.holdout} images held out of train/ (not val/)"
    if args.pretrain_args:
        label += f", pretraining with {shlex.join(args.pretrain_args)}"
    with open(os.path.join(out, "table1.md"), "w") as f:
        f.write(f"# Table 1 at equal budget (top-1 %, {label})\n\n" + "\n".join(lines) + "\n\n"
                f"± is the standard error of the accuracy over {scored(args)}, sqrt(p (100 - p) / n); bits per dim "
                f"on {scored(args)} too.\n\n"
                f"# Paired differences on the same images ({scored(args)})\n\n" + "\n".join(diffs) + "\n\n"
                "± is the standard error of the mean per-image difference of the two encoders' hits "
                "(1 right, 0 wrong).\n\n"
                "# Seed to seed\n\n" + "\n".join(seeds) + "\n\n"
                "# Fig. 5: latent similarity of views\n\n" + "\n".join(fig5) + "\n")
        f.write("".join("\n" + line for line in label_lines + uses_lines))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"rows": records, "paired_differences": pair_records, "seed_to_seed": seed_records, **label_records,
                   **uses_records},
                  f, indent=1)
    if curve_rows:
        fields = list(dict.fromkeys(k for r in curve_rows for k in r))
        with open(os.path.join(out, "curves.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(curve_rows)
        plot_curves(curve_rows, os.path.join(out, "curves.png"))
    if label_records.get("table2"):
        plot_labels(label_records, os.path.join(out, "table2.png"))
    pictures = [p for p in ("curves.png", "table2.png") if os.path.exists(os.path.join(out, p))]
    print(f"wrote {out}/table1.md, results.json, curves.csv" + "".join(f", {p}" for p in pictures))


def plot_curves(rows, path):
    """Monitor curves over epochs, one line per encoder: held-out linear and kNN top-1, the training
    reconstruction error (MSE per pixel value, one scale for every method), and the Gaussian latents'
    signal-to-noise ratio."""
    plt = pyplot()
    if plt is None:
        return
    panels = [("val_linear_top1", "held-out linear top-1 (%)"), ("val_knn_top1", "held-out kNN top-1 (%)"),
              ("recon_mse", "training reconstruction MSE per pixel"),
              ("val_latent_snr", "latent signal / noise, sum Var(mu) / sum E[sigma^2]")]
    panels = [p for p in panels if any(r.get(p[0]) is not None for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    encoders = list(dict.fromkeys(r["encoder"] for r in rows))
    methods = list(dict.fromkeys(e.removesuffix("-s1") for e in encoders))  # a second seed: its method's colour, dashed
    for ax, (key, title) in zip(axes, panels):
        for encoder in encoders:
            pts = [(r["epoch"], r[key]) for r in rows if r["encoder"] == encoder and r.get(key) is not None]
            if pts:  # one colour per method in every panel
                ax.plot(*zip(*pts), "o--" if encoder.endswith("-s1") else "o-", label=encoder, markersize=3,
                        color=f"C{methods.index(encoder.removesuffix('-s1')) % 10}")
        if key == "val_latent_snr":
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_labels(records, path):
    """Table 2 at the small budget as bars (each row's probe and fine-tuning at 1 % and 10 %, ± their standard
    errors) beside the clusters' majority-label top-1: one picture of what labels do to each encoder. Where the
    AAE's uses have run, as in the tables, the semi-supervised y heads stand in the fine-tuned bars and the
    clustering y heads beside k-means in the cluster bars."""
    plt = pyplot()
    if plt is None:
        return
    rows = records["table2"]
    names = [r["label"].split(" (")[0].replace("-supervised AAE, its", " AAE's") for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [3, 1.4]})
    width = 0.8 / len(TABLE2_COLUMNS)
    for k, col in enumerate(TABLE2_COLUMNS):
        mode, pct = col.split()
        xs = [i + (k - (len(TABLE2_COLUMNS) - 1) / 2) * width for i, r in enumerate(rows) if r[col]["top1"] is not None]
        ys = [(r[col]["top1"], r[col]["se"]) for r in rows if r[col]["top1"] is not None]
        left.bar(xs, [y for y, _ in ys], width, yerr=[e for _, e in ys], capsize=2, color=f"C{k // 2}",
                 alpha=0.45 if mode == "linear" else 0.9,
                 label=f"{'probe' if mode == 'linear' else 'fine-tuned'}, {pct.replace('percent', ' %')} of the labels")
    clusters = records.get("clusters", [])  # k-means on each encoder, then the clustering AAEs' own y heads
    for ax, title in ((left, "Table 2 at the small budget: top-1 on the test images (%)"),
                      (right, "clusters, majority label: top-1 (%)")):
        ax.set_title(title, fontsize=10)
    head = ["y head" in c["label"] for c in clusters]
    for is_head, color, kind in ((False, "C2", "k-means"), (True, "C4", "the AAE's y head")):
        at = [i for i, h in enumerate(head) if h == is_head]
        if at:
            right.barh(at, [clusters[i]["majority_top1"][0] for i in at], color=color, capsize=2, label=kind,
                       xerr=[clusters[i]["majority_top1"][1] for i in at])
    cluster_names = [(c["row"].rsplit("-k", 1)[0] if h else c["label"].split(" (")[0].split(", K =")[0]) + f", K = {c['clusters']}"
                     for c, h in zip(clusters, head)]
    right.set_yticks(range(len(clusters)), cluster_names, fontsize=8)
    right.legend(fontsize=8, loc="lower right")
    right.invert_yaxis()
    left.set_xticks(range(len(rows)), names, rotation=20, ha="right", fontsize=8)
    left.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None where matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def have_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def figures(records, out):
    """PNG plots of the figure sweeps, when matplotlib is installed (tables are written either way)."""
    plt = pyplot()
    if plt is None:
        return
    panels = [("fig3", "beta"), ("fig4_batch", "batch"), ("fig4_latent", "latent_dim"), ("fig4_logscale", "log_scale")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3))
    for ax, (name, xlabel) in zip(axes, panels):
        pts = [(r["row"], r["top1"]) for r in records if r["table"] == name and r["top1"] is not None]
        if pts:
            ax.plot(*zip(*pts), "o-")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("top-1 (%)")
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "figures.png"), dpi=100)


def main(argv=None):
    p = argparse.ArgumentParser("run_all.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="paper", choices=["paper", "quick", "small"],
                   help="paper: every table and figure; quick: every cell for a few steps (a smoke run); small: "
                        "Table 1's encoders and two controls at equal budget on a small folder, with curves, Table 2 and "
                        "clusters, and the AAE's other uses: about 4 hours of pretraining for Table 1's rows on 2 CPU cores "
                        "with native bf16, more for the uses' rows; in parts with --rows")
    p.add_argument("--dry_run", action="store_true", help="print every command with its estimated GPU-hours")
    p.add_argument("--data_root", default="data",
                   help="paper: a folder holding cifar10/, stl10/ and imagenet/; quick and small without --data_path: "
                        "where cifar10-mini is made from cifar10/ (CIFAR-10, downloaded there if absent)")
    p.add_argument("--data_path", default=None,
                   help="quick, small: any ImageFolder tree with train/ and val/ (default DATA_ROOT/cifar10-mini: 4,085 "
                        "images in train/ and 1,000 in val/, all from CIFAR-10's training batches)")
    p.add_argument("--places_path", default=None, help="paper: an ImageFolder tree of Places205 (Table 3)")
    p.add_argument("--subset_dir", default=None,
                   help="Table 2: a folder holding SimCLR's ImageNet label lists 1percent.txt and 10percent.txt "
                        "(the paper's subsets); without it, fine-tuning uses a seeded per-class subset")
    p.add_argument("--nproc", type=int, default=1, help="processes per run (torchrun) ")
    p.add_argument("--output_dir", default=None, help="default runs/all-PROFILE")
    p.add_argument("--report_only", action="store_true", help="write the tables from what has run so far")
    p.add_argument("--in_process", action="store_true", help=argparse.SUPPRESS)  # tests: no interpreter per step
    p.add_argument("--quick_steps", type=int, default=8, help="quick: pretraining steps per run")
    p.add_argument("--small_epochs", type=int, default=30, help="small: pretraining epochs per run")
    p.add_argument("--label_evals", action=argparse.BooleanOptionalAction, default=True,
                   help="small: Table 2 at the small budget (fine-tuning and the probe on 1 %% and 10 %% of train/'s "
                        "labels) and k-means clusters, for the rows of Table 1 and the controls (their checkpoints are "
                        "needed: --no-label_evals for a folder whose runs are done but not kept)")
    p.add_argument("--rows", default=None, help="small: the rows to run, comma-separated (default all: "
                   + ",".join(SMALL_ALL) + ")")
    p.add_argument("--pretrain_args", default="",
                   help="small: flags added to every pretraining run, e.g. '--lr 1e-3 --warmup_epochs 0' (a single "
                        "flag as --pretrain_args=--flag, which argparse would otherwise take for one of its own)")
    p.add_argument("--holdout", type=int, default=0,
                   help="small: score on N images held out of train/ (a seeded per-class draw) instead of val/, "
                        "to choose a recipe without looking at val/")
    args = p.parse_args(argv)
    mini = args.profile in ("quick", "small") and not args.data_path
    if mini:  # cifar10-mini, made from CIFAR-10 under DATA_ROOT/cifar10 (downloaded there if absent)
        args.data_path = os.path.join(args.data_root, "cifar10-mini")
    small_only = [f for f, v in (("--rows", args.rows), ("--pretrain_args", args.pretrain_args), ("--holdout", args.holdout)) if v]
    if args.profile != "small" and small_only:
        p.error(f"{', '.join(small_only)}: only with --profile small")
    rows = SMALL_ALL if args.rows is None else [r.strip() for r in args.rows.split(",") if r.strip()]
    if not rows or set(rows) - set(SMALL_ALL):
        p.error(f"--rows {args.rows!r}: choose among {', '.join(SMALL_ALL)}")
    args.rows = [r for r in SMALL_ALL if r in rows]
    args.pretrain_args = shlex.split(args.pretrain_args)
    args.output_dir = args.output_dir or os.path.join("runs", f"all-{args.profile}")
    if mini and args.holdout and not (args.dry_run or args.report_only):  # the hold-out split is made of its files
        make_mini(args)
    if args.holdout:
        args.data_path = holdout_split(args.data_path, args.holdout, os.path.join(args.output_dir, "holdout-data"),
                                       create=not args.dry_run)
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
        if args.profile == "small" and labelled and not all(map(done, g.steps)):
            label_subsets(args.data_path, os.path.join(args.output_dir, "label-subsets"))
        run_grid(g, args, argv)
    (report_small if args.profile == "small" else report)(g, args)
    if not have_matplotlib():  # the tables are written either way; the figures wait for it
        print(f"matplotlib is not installed, so {'curves.png' if args.profile == 'small' else 'figures.png'} was not "
              "drawn: pip install matplotlib, then the same command with --report_only", flush=True)
    return g


if __name__ == "__main__":
    main()
