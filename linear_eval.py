"""Evaluations of a pretrained AAVAE encoder (Appendix A.1-A.4 of the paper): the linear probe, kNN, semi-supervised
fine-tuning (Table 2), the transfer probe of Table 3 (a probe on another dataset, Places205) and the latent
similarity matrices of Fig. 5.

    # linear probe, SimCLR protocol: frozen encoder in eval(), one linear layer on the pooled features
    python linear_eval.py --checkpoint runs/cifar10-aavae/checkpoint.pt --dataset cifar10 --data_path data
    # the baseline every table needs: an untrained encoder of the same architecture
    python linear_eval.py --random_init --encoder resnet50 --dataset cifar10 --data_path data
    # a fast linear probe on features computed once, without augmentation (result.json: "features": "cached")
    python linear_eval.py --checkpoint CKPT --cached_features --dataset folder --data_path data/cifar10-mini
    # weighted kNN on normalised features (seconds), fine-tuning on 1 % of the labels, Fig. 5
    python linear_eval.py --checkpoint CKPT --mode knn ...
    python linear_eval.py --checkpoint CKPT --mode finetune --label_fraction 0.01 --dataset imagenet ...
    python linear_eval.py --checkpoint CKPT --mode similarity ...
    # the probe on the same labelled images only
    python linear_eval.py --checkpoint CKPT --cached_features --label_fraction 0.01 ...
    # Table 3: the frozen ImageNet encoder probed on Places205 (step schedule, weight decay, plain momentum)
    python linear_eval.py --checkpoint CKPT --dataset folder --data_path /data/places205 --epochs 14 --schedule step \
        --weight_decay 5e-4 --no-nesterov
    # several GPUs: only the linear head is wrapped in DDP (the whole model for finetune)
    torchrun --nproc_per_node=4 linear_eval.py --checkpoint CKPT --dataset imagenet --data_path /data/imagenet

The whole test split is scored exactly once, also under DDP. Results: OUTPUT_DIR/result.json and
OUTPUT_DIR/log.jsonl (one line per epoch). linear and finetune save OUTPUT_DIR/probe_checkpoint.pt after
every epoch; running the same command again after a crash resumes there. Evaluations of the methods beyond the
paper run through this file's get_args_parser and evaluate from their own modules: k-means clusters
(python -m methods.clustering) and the adversarial autoencoder's uses (python -m methods.aae_uses evaluate).
"""
import argparse
import contextlib
import copy
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import aavae
from util import data, misc, probe
from util.rundir import (PROBE_CHECKPOINT, check_eval_dir, default_output_dir, load_encoder, open_eval_dir, probe_args,
                         resume_probe)
from aavae import normalize
from util.probe import probe_lr
from util.misc import UserError, all_reduce, generator, is_main, print0

# Table 2 (Appendix A.1, "Semi-supervised learning evaluation"): (backbone lr, head lr) by label fraction
FINETUNE_LR = {0.01: (0.02, 0.5), 0.1: (0.01, 0.2)}


# ----------------------------------------------------------------------------------------------------
# Arguments


def get_args_parser(prog="linear_eval.py", modes=None, default="linear"):
    """The probes' flags; a module of methods/ passes its own `modes` (name -> function, see evaluate)."""
    p = misc.Parser(prog, description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("encoder")
    g.add_argument("--checkpoint", default=None, help="checkpoint.pt or encoder.pth written by aavae.py")
    g.add_argument("--random_init", action="store_true", help="evaluate an untrained encoder (the baseline row)")
    g.add_argument("--encoder", default=None, choices=sorted(aavae.FEATURE_DIM),
                   help="architecture for --random_init (read from the checkpoint otherwise)")
    g.add_argument("--stem", default="auto", choices=["auto", "cifar", "stl", "imagenet"],
                   help="for --random_init, or an encoder.pth whose 7x7 stem leaves the maxpool undecided")
    g = p.add_argument_group("data (the splits of Appendix A.1)")
    g.add_argument("--dataset", default="cifar10", choices=["cifar10", "stl10", "imagenet", "folder"])
    g.add_argument("--data_path", default="data", help="as for aavae.py; folder: train/ is trained on, val/ is the test set")
    g.add_argument("--image_size", type=int, default=None, help="folder only, as for aavae.py")
    g.add_argument("--in_memory", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--workers", type=int, default=misc.default_workers(), help="as for aavae.py")
    g.add_argument("--train_limit", type=int, default=None,
                   help="train the probe / fill the kNN bank with this many (seeded) training images; the test split is always whole")
    g = p.add_argument_group("protocol")
    g.add_argument("--mode", default=default, choices=sorted(modes or MODES))
    g.add_argument("--cached_features", action="store_true",
                   help="linear: encode both splits once without augmentation and train the head (after a "
                        "BatchNorm without affine parameters) on those features: seconds instead of hours, and a "
                        "weaker probe than the SimCLR protocol's augmented views; result.json says features: cached")
    g.add_argument("--epochs", type=int, default=None, help="default 90 for linear, 20 for finetune")
    g.add_argument("--batch_size", type=int, default=256, help="GLOBAL batch over all processes")
    g.add_argument("--lr", type=float, default=None,
                   help="linear: default 0.1 x batch_size / 256 (a float: never truncated); finetune: the backbone's "
                        "lr at batch 256, scaled by batch_size / 256 (default Table 2's)")
    g.add_argument("--head_lr", type=float, default=None, help="finetune: the head's lr at batch 256, scaled as --lr")
    g.add_argument("--schedule", default="cosine", choices=["cosine", "step"],
                   help="cosine decay per step (SimCLR), or step: lr x0.1 after each third of the epochs "
                        "(Places205 transfer, Appendix A.1: of 14 epochs, x0.1 after epochs 5 and 10)")
    g.add_argument("--weight_decay", type=float, default=0.0, help="SGD weight decay (Places205 transfer: 5e-4)")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                   help="Nesterov momentum 0.9; default on for linear (SimCLR protocol), off for finetune (the paper's "
                        "plain momentum 0.9); --no-nesterov for the Places205 probe")
    g.add_argument("--label_fraction", type=float, default=None,
                   help="finetune (and linear, to probe on the same labelled images): 0.01 or 0.1 of the labels, "
                        "a seeded draw per class")
    g.add_argument("--subset_file", default=None,
                   help="finetune, linear: a file listing the labelled training images to use, one a line: a file "
                        "name (SimCLR's ImageNet lists) or CLASS/FILE")
    g.add_argument("--knn_k", type=int, default=200)
    g.add_argument("--knn_t", type=float, default=0.1, help="temperature of the kNN vote weights exp(cos / t)")
    g.add_argument("--num_images", type=int, default=8, help="similarity, grid: test images")
    g.add_argument("--views", type=int, default=4, help="similarity: augmented views per image")
    g = p.add_argument_group("run")
    g.add_argument("--output_dir", default=None,
                   help="default runs/eval-ENCODER-PROTOCOL-DATA, e.g. runs/eval-cifar10-aavae-linear-cifar10 for "
                        "--checkpoint runs/cifar10-aavae/checkpoint.pt, runs/eval-random-resnet50-knn-cifar10")
    g.add_argument("--overwrite", action="store_true", help="replace a result.json already in output_dir")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on with CUDA and CPUs with native bf16)")
    g.add_argument("--sync_bn", action=argparse.BooleanOptionalAction, default=False,
                   help="finetune under torchrun: BatchNorm over the global batch (the other modes keep the encoder "
                        "in eval(), where BatchNorm uses its stored statistics and the flag changes nothing)")
    return p


def validate(args):
    if bool(args.checkpoint) == args.random_init:
        raise UserError("give either --checkpoint PATH or --random_init (with --encoder)")
    if args.random_init and not args.encoder:
        raise UserError("--random_init needs --encoder to know which architecture to build")
    if args.mode == "finetune":
        if args.label_fraction is None and args.subset_file is None:
            raise UserError("--mode finetune needs --label_fraction (0.01 or 0.1) or --subset_file")
        if args.label_fraction is not None and not 0 < args.label_fraction <= 1:
            raise UserError(f"--label_fraction must lie in (0, 1], got {args.label_fraction}")
        backbone, head = FINETUNE_LR.get(args.label_fraction, FINETUNE_LR[0.1])
        args.lr, args.head_lr = args.lr or backbone, args.head_lr or head
    elif (args.label_fraction is not None or args.subset_file is not None) and args.mode != "linear":
        raise UserError("--label_fraction and --subset_file belong to --mode finetune and linear")
    elif args.label_fraction is not None and not 0 < args.label_fraction <= 1:
        raise UserError(f"--label_fraction must lie in (0, 1], got {args.label_fraction}")
    args.epochs = args.epochs or (20 if args.mode == "finetune" else 90)
    args.nesterov = args.mode != "finetune" if args.nesterov is None else args.nesterov
    args.amp = misc.native_bf16() if args.amp is None else args.amp
    args.lr = args.lr if args.lr is not None else 0.1 * args.batch_size / 256  # a float: the authors' int(b / 256) was 0 below 256
    for name in ("batch_size", "epochs", "knn_k", "num_images", "restarts", "kmeans_iters", "clusters"):
        if getattr(args, name, None) is not None and getattr(args, name) <= 0:
            raise UserError(f"--{name} must be positive, got {getattr(args, name)}")
    if args.cached_features and args.mode != "linear":
        raise UserError("--cached_features is a form of --mode linear")
    if args.views < 2:
        raise UserError("--views must be at least 2: similarity compares views of the same image")
    if args.lr <= 0 or args.knn_t <= 0 or args.weight_decay < 0:
        raise UserError("--lr and --knn_t must be positive and --weight_decay non-negative")
    args.output_dir = args.output_dir or default_output_dir(args)
    return args


def build(args, device):
    """Data (probe splits) and the encoder, weights loaded strictly. Returns (train, test, spec, model, info)."""
    state, proj_state, info = load_encoder(args)
    data_args = argparse.Namespace(**{k: getattr(args, k) for k in ("dataset", "data_path", "image_size", "in_memory",
                                                                     "workers", "seed")},
                                   stem=info["stem"] or "auto", jitter_strength=None, blur=None)
    train, test, spec = aavae.load_data(data.resolve_data(data_args), device, probe=True)
    if args.train_limit and args.train_limit < len(train):
        train = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))[:args.train_limit].sort().values)
    info["stem"] = data_args.stem
    if info.get("arch") == "mlp":  # a fully-connected model of methods/ on MNIST: its own modes load it whole
        return train, test, spec, None, None, info
    with torch.device("meta") if state is not None else contextlib.nullcontext():  # no initialisation to overwrite
        encoder = aavae.build_encoder(info["encoder"], info["stem"])
    projection = None
    if state is not None:
        try:
            encoder.load_state_dict(state, strict=True, assign=True)
            if proj_state:
                projection = aavae.ProjectionHead(aavae.FEATURE_DIM[info["encoder"]], info["latent_dim"], info["variational"])
                projection.load_state_dict(proj_state, strict=True)
        except RuntimeError as e:
            raise UserError(f"{args.checkpoint} does not fit a {info['encoder']} encoder with the {info['stem']} stem "
                            f"({str(e).splitlines()[1].strip()[:200] if len(str(e).splitlines()) > 1 else e})") from None
    encoder.to(device, memory_format=torch.channels_last)  # as in training: faster convolutions
    if projection is not None:
        projection.to(device).eval()
    return train, test, spec, encoder, projection, info


# ----------------------------------------------------------------------------------------------------
# Batches and scoring


def train_view(batch, stem, size, g):
    """The probe's train-time view: RandomCrop(32, padding 4, reflect) + flip for CIFAR (the stem tells),
    RandomResizedCrop + flip otherwise (already done by the split, which was asked for one view)."""
    x01, *views, y = batch
    if stem != "cifar":
        return views[0], y
    n = len(x01)
    padded = F.pad(x01, (4, 4, 4, 4), mode="reflect")
    ij = torch.randint(0, padded.shape[-1] - size + 1, (n, 2), device=x01.device, generator=g)
    boxes = torch.cat([ij, torch.full_like(ij, size)], 1)
    return aavae.resized_crop(padded, boxes, size, torch.rand(n, device=x01.device, generator=g) < 0.5), y


class Head(nn.Linear):
    """The probe's linear classifier, computed in float32 even under autocast: bf16 logits tie and round,
    which costs tenths of a point over 1,000 classes and makes a GPU's score differ from a CPU's."""

    def forward(self, h):
        with torch.autocast(h.device.type, enabled=False):
            return super().forward(h.float())


@torch.no_grad()
def score(predict, test, spec, args, rank, world, desc="test"):
    """Top-1 and top-5 accuracy (%) of predict(x) -> (N, classes) over the whole test split, each image once
    (each rank scores its block, misc.block), and every test image's top-1 hit ("correct", hits)."""
    counts = torch.zeros(3, dtype=torch.float64, device=test.device)
    start, stop = misc.block(len(test), rank, world)
    every = torch.zeros(misc.padded(len(test), world), dtype=torch.uint8, device=test.device)
    b = max(1, args.batch_size // world)
    for x01, y in tqdm(test.batches(torch.arange(start, stop), b, 0, ("score", args.seed, rank), args.workers), desc=desc,
                       leave=False, total=math.ceil((stop - start) / b), disable=not is_main() or None):
        scores = predict(normalize(x01, spec))
        counts += probe.correct(scores, y)
        every[start:start + len(y)] = hits(scores, y)
        start += len(y)
    top1, top5 = probe.percent(all_reduce(counts))
    return {"top1": top1, "top5": top5, "test_images": int(counts[2].item()),
            "correct": misc.gather_blocks(every, rank, world)[:len(test)].tolist()}


def num_classes(split):
    return int(split.labels.max()) + 1


def fit(model, params_groups, trainable, modules, train, spec, info, args, rank, world, amp):
    """SGD with momentum 0.9 (Nesterov if --nesterov), --schedule per step, --weight_decay,
    cross-entropy; one log.jsonl line per epoch.
    `model(x)` gives logits; `trainable` is the module put in train() mode (the head alone when probing);
    `modules` names what a resumed run must restore (the head, or the whole model when fine-tuning), saved
    with the optimizer after every epoch. Returns the optimizer, so that callers can check what it held."""
    optimizer = torch.optim.SGD(params_groups, momentum=0.9, nesterov=args.nesterov, weight_decay=args.weight_decay)
    base = [g["lr"] for g in optimizer.param_groups]
    start = resume_probe(args, modules, optimizer)
    batches = data.TrainBatches(train, args.batch_size, rank, world, views=0 if info["stem"] == "cifar" else 1,
                                 workers=args.workers)
    total = args.epochs * batches.steps_per_epoch
    stream = batches(start * batches.steps_per_epoch, ("probe_crops", args.seed, rank))  # the data order does not depend on a resume
    device = train.device
    bar = tqdm(total=total, initial=start * batches.steps_per_epoch, desc=args.mode, disable=not is_main() or None)
    for epoch in range(start, args.epochs):
        trainable.train()
        acc, seen, t0 = torch.zeros(2, device=device), 0, time.perf_counter()
        for it in range(batches.steps_per_epoch):
            step = epoch * batches.steps_per_epoch + it
            for group, lr in zip(optimizer.param_groups, base):
                group["lr"] = probe_lr(step, batches.steps_per_epoch, args.epochs, lr, args.schedule)
            view, y = train_view(next(stream), info["stem"], spec.size, generator(device, "probe_view", args.seed, step, rank))
            with amp():
                logits = model(normalize(view, spec))
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            acc += torch.stack([loss.detach() * len(y), (logits.argmax(1) == y).sum().float()])
            seen += len(y) * world  # every rank takes an equal share of each global batch
            bar.update(1)
        all_reduce(acc)
        for m in modules.values():  # rank 0's BatchNorm statistics on every rank, saved and scored alike
            misc.broadcast_buffers(m)
        row = {"epoch": epoch + 1, "loss": acc[0].item() / seen, "train_top1": 100 * acc[1].item() / seen,
               "lr": optimizer.param_groups[0]["lr"], "img_per_s": seen / (time.perf_counter() - t0)}
        if is_main():  # the log line first: one that outruns the checkpoint is dropped on resume
            misc.write_log(os.path.join(args.output_dir, "log.jsonl"), row)
            misc.save_atomic({"epoch": epoch + 1, "optimizer": optimizer.state_dict(),
                               "args": probe_args(args),
                               **{name: m.state_dict() for name, m in modules.items()}},
                              os.path.join(args.output_dir, PROBE_CHECKPOINT))
            bar.set_postfix(loss=f"{row['loss']:.3f}", top1=f"{row['train_top1']:.1f}")
        if dist.is_initialized():
            dist.barrier()
    bar.close()
    return optimizer


# ----------------------------------------------------------------------------------------------------
# Modes


def linear(args, train, test, spec, encoder, info, rank, world, amp, projection=None):
    """SimCLR protocol: the encoder is frozen and stays in eval(); only the head learns. With --cached_features,
    linear_cached instead."""
    if args.cached_features:
        return linear_cached(args, train, test, spec, encoder, info, rank, world, amp)
    device = train.device
    encoder.eval().requires_grad_(False)
    before = copy.deepcopy(encoder.state_dict())
    head = Head(aavae.FEATURE_DIM[info["encoder"]], num_classes(train)).to(device)
    wrapped = DDP(head) if world > 1 else head

    def logits(x):
        with torch.no_grad():
            h = encoder(x)
        return wrapped(h.float())

    optimizer = fit(logits, [{"params": head.parameters(), "lr": args.lr}], head, {"head": head}, train, spec, info,
                    args, rank, world, amp)
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert held == {id(p) for p in head.parameters()}, "the probe's optimizer holds parameters beyond the head"
    assert not encoder.training, "the encoder left eval() during the probe"
    changed = [k for k, v in encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert not changed, f"the frozen encoder changed during the probe: {changed[:3]}"
    head.eval()
    with amp():
        result = score(lambda x: head(encoder(x).float()), test, spec, args, rank, world)
    return {**result, "encoder_unchanged": True, "lr": args.lr}


def hits(scores, labels):
    """result.json's "correct" (as a uint8 tensor): 1 where an image's top-1 class is its label, 0 elsewhere, for every test image
    in the split's order, so that two encoders scored on the same images can be compared image by image."""
    return (scores.argmax(1) == labels.to(scores.device)).to(torch.uint8)


def cached_features(encoder, split, spec, args, info, rank, world, amp, **kw):
    """The frozen encoder's pooled features of a split, once, with the evaluation preprocessing (probe.pooled_features,
    whose options kw takes)."""
    encoder.eval()

    def encode(x01):
        with amp():
            return encoder(normalize(x01, spec))

    return probe.pooled_features(encode, split, aavae.FEATURE_DIM[info["encoder"]], max(1, args.batch_size // world),
                                 ("features", args.seed, rank), rank, world, args.workers, **kw)


def linear_cached(args, train, test, spec, encoder, info, rank, world, amp, projection=None):
    """--cached_features: the encoder runs once over both splits without augmentation, and the head
    (BatchNorm without affine parameters, then Linear) trains on those features with the probe's optimiser
    and schedule. Every rank holds all features and trains the same head; the whole test split is scored."""
    t0 = time.perf_counter()
    train_f, test_f = (cached_features(encoder, s, spec, args, info, rank, world, amp) for s in (train, test))
    extracted = time.perf_counter() - t0
    head = probe.fit_linear_head(train_f, train.labels, num_classes(train), args.epochs, args.batch_size, args.lr,
                                 args.weight_decay, args.nesterov, args.schedule, args.seed)
    with torch.no_grad():
        scores = head(test_f)
    top1, top5 = probe.accuracy(scores, test.labels)
    return {"top1": top1, "top5": top5, "test_images": len(test), "lr": args.lr,
            "feature_seconds": extracted, "head_seconds": time.perf_counter() - t0 - extracted,
            "correct": hits(scores, test.labels).tolist()}


def knn(args, train, test, spec, encoder, info, rank, world, amp, projection=None):
    """Weighted kNN: the k most cosine-similar training features vote for their class with exp(cos / t).
    Every rank holds the whole bank, normalised as it is encoded, and scores its own block of the test
    images. The bank stays float32: in float16 it moved top-1 on cifar10-mini by 0.6 points (random init)."""
    bank = cached_features(encoder, train, spec, args, info, rank, world, amp, normalize=True)
    queries = cached_features(encoder, test, spec, args, info, rank, world, amp, normalize=True, gather=False)
    start, stop = misc.block(len(test), rank, world)
    votes = probe.knn_scores(bank, train.labels, queries, num_classes(train), args.knn_k, args.knn_t)
    top1, top5 = probe.percent(all_reduce(probe.correct(votes, test.labels[start:stop])))
    every = torch.zeros(misc.padded(len(test), world), dtype=torch.uint8, device=votes.device)
    every[start:stop] = hits(votes, test.labels[start:stop])
    correct = misc.gather_blocks(every, rank, world)[:len(test)].tolist()
    return {"top1": top1, "top5": top5, "test_images": len(test), "k": args.knn_k, "t": args.knn_t, "correct": correct}


def labelled_only(train, args, world):
    """The training split cut to the labelled subset of --label_fraction or --subset_file (unchanged without
    either), with the global batch capped at the subset's size: 1 % of a small dataset is one batch."""
    if args.label_fraction is None and args.subset_file is None:
        return train
    keep = data.label_subset(train, args)
    if len(keep) < args.batch_size:
        args.batch_size = max(world, len(keep) // world * world)
        print0(f"the labelled subset has {len(keep)} images: batch capped at {args.batch_size}")
    return train.subset(keep)


def finetune(args, train, test, spec, encoder, info, rank, world, amp, projection=None):
    """Table 2: the backbone is unfrozen and learns at its own lr beside the head's, on the labelled subset
    that `train` was cut to (labelled_only). The head is the cached probe's (probe.StandardHead: standardised
    features, a zero start), and both lrs, given at batch 256, scale linearly with the global batch (which
    labelled_only caps at a small subset's size): a plain Linear on raw features at unscaled lrs diverged on
    small subsets, its loss climbing tenfold before the cosine decay brought it back."""
    subset = train
    before = [p.detach().clone() for p in encoder.parameters()]
    head = probe.StandardHead(aavae.FEATURE_DIM[info["encoder"]], num_classes(train)).to(train.device)
    model = nn.Sequential(encoder, head)
    if args.sync_bn and world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        encoder = model[0]
    wrapped = DDP(model) if world > 1 else model
    scale = args.batch_size / 256
    groups = [{"params": encoder.parameters(), "lr": args.lr * scale}, {"params": head.parameters(), "lr": args.head_lr * scale}]
    fit(lambda x: wrapped(x).float(), groups, model, {"model": model}, subset, spec, info, args, rank, world, amp)
    moved = sum(not torch.equal(a, b) for a, b in zip(before, encoder.parameters()))
    model.eval()  # fit() left rank 0's BatchNorm statistics on every rank: each test shard is scored with them
    with amp():
        result = score(lambda x: model(x).float(), test, spec, args, rank, world)
    return {**result, "train_images": len(subset), "label_fraction": args.label_fraction,
            "backbone_lr": args.lr, "head_lr": args.head_lr, "lr_scale": scale, "head": "standardised",
            "backbone_tensors_changed": moved}


def colour(m):
    """A cosine-similarity matrix in [-1, 1] as an RGB image: blue (-1), white (0), red (+1)."""
    m = m.clamp(-1, 1)
    pos, neg = m.clamp(min=0), (-m).clamp(min=0)
    return torch.stack([1 - neg, 1 - pos - neg, 1 - pos])


@torch.no_grad()
def similarity(args, train, test, spec, encoder, info, rank, world, amp, projection):
    """Fig. 5: latents of `views` augmented views (the pretraining augmentation) of `num_images` test
    images; their cosine-similarity matrix, image by image, and the mean same- and different-image values."""
    encoder.eval()
    device = test.device
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))[: args.num_images].sort().values
    x01, *views, _ = next(test.batches(idx, len(idx), args.views, ("similarity_crops", args.seed), args.workers))
    g = generator(device, "similarity", args.seed)
    v = torch.stack([aavae.photometric(t, spec, g) for t in views], 1).flatten(0, 1)  # image-major order
    with amp():
        h = encoder(normalize(v, spec))
        z = projection(h.float())[0] if projection is not None else h  # latent mean mu, else pooled features
    z = F.normalize(z.float(), dim=1)
    sim = z @ z.T
    same = torch.block_diag(*[torch.ones(args.views, args.views, device=device)] * len(idx)).bool()
    off_diag = ~torch.eye(len(sim), dtype=torch.bool, device=device)
    cell = 12
    picture = F.interpolate(colour(sim.cpu())[None], scale_factor=cell, mode="nearest")[0]
    picture[:, ::args.views * cell, :] = 0  # black lines between images
    picture[:, :, ::args.views * cell] = 0
    if is_main():
        torchvision.utils.save_image(picture, os.path.join(args.output_dir, "similarity.png"))
        torchvision.utils.save_image(v.cpu(), os.path.join(args.output_dir, "similarity_views.png"), nrow=args.views)
    return {"sim_same": sim[same & off_diag].mean().item(), "sim_diff": sim[~same].mean().item(),
            "latent": "mu" if projection is not None else "pooled features", "num_images": len(idx), "views": args.views,
            "picture": "similarity.png"}


# ----------------------------------------------------------------------------------------------------
# Main


def evaluate(args, modes=None):
    """Runs --mode, one of `modes` (default MODES): mode(args, train, test, spec, encoder, info, rank, world, amp,
    projection) -> the result's own fields; writes result.json."""
    rank, world, device = misc.setup_distributed()
    if args.batch_size % world:
        raise UserError(f"--batch_size {args.batch_size} (global) does not divide among {world} processes")
    amp = misc.autocast(args, device)
    result_path = check_eval_dir(args)
    torch.manual_seed(args.seed)
    train, test, spec, encoder, projection, info = build(args, device)
    if encoder is None and modes is None:
        raise UserError(f"{args.checkpoint} is a fully-connected model of methods/ (--arch mlp), not a ResNet encoder: "
                        "python -m methods.aae_uses evaluate (or methods.iwae evaluate) scores it")
    train = labelled_only(train, args, world)
    open_eval_dir(args)
    trains = args.mode in ("linear", "finetune")
    print0(f"{args.mode}: {info['encoder']} ({info['stem']} stem) from {info['source']}; {len(train)} train / "
           f"{len(test)} test images at {spec.size}px; batch {args.batch_size} global = {world} x "
           f"{args.batch_size // world}; " + (f"lr {args.lr:g} ({args.schedule}, weight decay {args.weight_decay:g}); "
                                              f"{args.epochs} epochs; " if trains else "") + f"device {device}")
    with misc.algorithms(deterministic=False):
        result = (modes or MODES)[args.mode](args, train, test, spec, encoder, info, rank, world, amp, projection)
    result = {"mode": args.mode, "checkpoint": info["source"], "encoder": info["encoder"], "stem": info["stem"],
              "dataset": args.dataset, "epochs": args.epochs if trains else None, "batch_size": args.batch_size,
              **({"schedule": args.schedule, "weight_decay": args.weight_decay, "nesterov": args.nesterov} if trains else {}),
              **({"features": "cached" if args.cached_features else "augmented views"} if args.mode == "linear" else {}),
              **({"train_images": len(train), "label_fraction": args.label_fraction, "subset_file": args.subset_file}
                 if args.mode == "linear" and (args.label_fraction or args.subset_file) else {}),
              **result, "provenance": misc.provenance()}
    if is_main():
        misc.save_atomic_json(result, result_path)
        print0(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
                          if k not in ("provenance", "cluster_sizes", "prior_verdict", "test_clusters", "test_labels", "coords")
                          and not k.endswith("correct")))
    return result


MODES = {"linear": linear, "knn": knn, "finetune": finetune, "similarity": similarity}


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    return misc.run_cli("linear_eval.py", lambda: evaluate(validate(args)))


if __name__ == "__main__":
    main()
