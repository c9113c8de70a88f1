"""Probes on frozen features, shared by linear_eval.py (--cached_features, --mode knn) and a pretraining run's
representation monitor (monitor): the pooled features of a whole split, computed once with the evaluation
preprocessing; a linear head trained on them; a weighted kNN vote; top-k accuracy.

Features are not augmented, so a head trained on them is a faster and weaker probe than the SimCLR
protocol's, which sees a new augmented view of every image in every epoch (linear_eval.py's default).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from util.misc import block, gather_blocks, generator, padded


@torch.no_grad()
def pooled_features(encode, split, dim, batch, keys, rank=0, world=1, workers=0, normalize=False, gather=True):
    """encode(x01) -> (n, dim) for the images of `split` (x01: floats in [0, 1], evaluation preprocessing
    only), written in float32 (L2-normalised rows with `normalize`) into one tensor allocated once. Each rank
    encodes its block of the split (misc.block). With `gather`, the blocks are gathered in place and every
    rank returns all N rows in the split's order; without, a rank returns its own block only, the queries it
    scores. On the split's device."""
    n = len(split)
    start, stop = block(n, rank, world)
    out = torch.empty(padded(n, world) if gather else stop - start, dim, device=split.device)
    at = start if gather else 0
    for x01, _ in split.batches(torch.arange(start, stop), batch, 0, keys, workers):
        f = encode(x01).float()
        out[at:at + len(f)] = F.normalize(f, dim=1) if normalize else f
        at += len(f)
    return gather_blocks(out, rank, world)[:n] if gather else out


def held_out_subset(n, args):
    """The --val_size held-out images the diagnostics use (all with 0), a seeded choice in a random order."""
    return torch.randperm(n, generator=generator("cpu", "val_subset"))[: args.val_size or n]


def monitor(model, train_split, val_split, args, spec, amp, rank, world):
    """A pretraining run's monitor, at each validation: how good the encoder's pooled features are for
    classification, on labels the run already has. A linear head (fit_linear_head, 90 epochs) trained on the
    features of --monitor_images seeded training images, and a weighted kNN vote (k = 200, t = 0.1) from the same
    bank, both scored on the diagnostics' held-out images: a fast, weaker stand-in for linear_eval.py, to follow a
    run. Under torchrun the features are gathered, so each image counts once. Off where the held-out images have
    no labels (STL-10's come from its unlabelled split)."""
    if not args.monitor_images or bool((val_split.labels < 0).any()):
        return {}
    bank = train_split.subset(torch.randperm(len(train_split), generator=generator("cpu", "monitor_bank", args.seed))
                              [:args.monitor_images].sort().values)
    held = val_split.subset(held_out_subset(len(val_split), args).sort().values)
    mean, std = spec.stats(train_split.device)

    def encode(x01):
        with amp():
            return model.encoder(((x01 - mean) / std).contiguous(memory_format=torch.channels_last))

    was_training = model.training
    model.eval()
    # torchvision's ResNet keeps the width of its last stage, the pooled features', in inplanes (512 or 2048)
    b, keys, dim = max(1, args.batch_size // world), ("monitor", args.seed, rank), model.encoder.inplanes
    bank_f, held_f = [pooled_features(encode, s, dim, b, keys, rank, world, args.workers) for s in (bank, held)]
    model.train(was_training)
    classes = int(max(bank.labels.max(), held.labels.max())) + 1
    head = fit_linear_head(bank_f, bank.labels, classes, seed=args.seed)
    with torch.no_grad():
        linear = accuracy(head(held_f), held.labels)[0]
    knn = accuracy(knn_scores(F.normalize(bank_f, dim=1), bank.labels, F.normalize(held_f, dim=1), classes), held.labels)[0]
    return {"val_linear_top1": linear, "val_knn_top1": knn}


def probe_lr(step, steps_per_epoch, epochs, lr, schedule):
    """cosine: decay per step to zero at the end; step: x0.1 after every ceil(epochs / 3) epochs."""
    if schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * step / (epochs * steps_per_epoch)))
    return lr * 0.1 ** (step // steps_per_epoch // math.ceil(epochs / 3))


class StandardHead(nn.Sequential):
    """The probes' classifier: BatchNorm without affine parameters (it standardises each feature, as MAE's
    linear probe does), then Linear(dim, classes) starting from zero, so that the first loss is log(classes)
    whatever the features' scale. Computed in float32 even under autocast: bf16 logits tie and round."""

    def __init__(self, dim, classes):
        super().__init__(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, classes))
        nn.init.zeros_(self[1].weight), nn.init.zeros_(self[1].bias)

    def forward(self, h):
        with torch.autocast(h.device.type, enabled=False):
            return super().forward(h.float())


def fit_linear_head(features, labels, classes, epochs=90, batch=256, lr=0.1, weight_decay=0.0, nesterov=True,
                    schedule="cosine", seed=0):
    """A linear classifier (StandardHead) on fixed features; SGD with momentum
    0.9, the lr schedule per step, cross-entropy, a seeded order per epoch. It draws nothing from torch's
    global random state. Returns the head in eval() mode."""
    n, dim = features.shape
    head = StandardHead(dim, classes).to(features.device)
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, nesterov=nesterov, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(n / batch)
    labels = labels.to(features.device)
    head.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator("cpu", "probe_order", seed, epoch)).to(features.device)
        for it in range(steps_per_epoch):
            idx = order[it * batch:(it + 1) * batch]
            if len(idx) < 2:  # BatchNorm needs two samples; a last batch of one is skipped
                continue
            for group in optimizer.param_groups:
                group["lr"] = probe_lr(epoch * steps_per_epoch + it, steps_per_epoch, epochs, lr, schedule)
            loss = F.cross_entropy(head(features[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return head.eval()


def correct(scores, labels):
    """(top-1 hits, top-5 hits, images) of class scores (N, classes) against labels (N,), as a float64
    tensor on the scores' device, to be summed over batches and ranks; top-5 is top-all with fewer classes."""
    labels = labels.to(scores.device)
    top = scores.topk(min(5, scores.shape[1]), 1).indices
    hits = torch.stack([(top[:, 0] == labels).sum(), (top == labels[:, None]).any(1).sum()]).double()
    return torch.cat([hits, torch.full((1,), len(labels), dtype=torch.float64, device=scores.device)])


def percent(counts):
    """(top-1 %, top-5 %) of summed `correct` counts."""
    top1, top5, n = counts.tolist()
    return 100 * top1 / n, 100 * top5 / n


def accuracy(scores, labels):
    """Top-1 and top-5 accuracy (%) of class scores (N, classes) against labels (N,), in this process."""
    return percent(correct(scores, labels))


KNN_BLOCK = 65536  # bank rows whose similarities to 1,024 queries are taken at a time (256 MB in float32)


@torch.no_grad()
def knn_scores(bank, bank_labels, queries, classes, k=200, t=0.1):
    """Weighted kNN on cosine similarity: the k nearest bank features of each query vote for their class
    with weight exp(cos / t). bank (M, dim) and queries (N, dim) are L2-normalised rows. The similarities are
    taken for KNN_BLOCK bank rows at a time, keeping the k nearest so far: the whole (1,024, M) matrix would
    be 5 GB for ImageNet's bank. Returns (N, classes)."""
    votes = torch.zeros(len(queries), classes, device=queries.device)
    bank_labels, k = bank_labels.to(bank.device), min(k, len(bank))
    for start in range(0, len(queries), 1024):  # (1024, KNN_BLOCK) similarities at a time
        q, sim, idx = queries[start:start + 1024], None, None
        for b in range(0, len(bank), KNN_BLOCK):
            s, i = (q @ bank[b:b + KNN_BLOCK].T).topk(min(k, len(bank) - b), dim=1)
            if sim is None:
                sim, idx = s, i + b
            else:  # the k nearest of those so far and this block's
                sim, pick = torch.cat([sim, s], 1).topk(k, dim=1)
                idx = torch.cat([idx, i + b], 1).gather(1, pick)
        votes[start:start + 1024].scatter_add_(1, bank_labels[idx], torch.exp(sim / t))
    return votes
