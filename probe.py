"""Probes on frozen features, shared by linear_eval.py (--cached_features, --mode knn) and aavae.py's
representation monitor: the pooled features of a whole split, computed once with the evaluation
preprocessing; a linear head trained on them; a weighted kNN vote; top-k accuracy.

Features are not augmented, so a head trained on them is a faster and weaker probe than the SimCLR
protocol's, which sees a new augmented view of every image in every epoch (linear_eval.py's default).
"""
import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from utils import generator


@torch.no_grad()
def pooled_features(encode, split, batch, keys, rank=0, world=1, workers=0):
    """encode(x01) -> (n, dim) for every image of `split`, in the split's order, on every rank: each rank
    encodes every world-th image (x01: floats in [0, 1], evaluation preprocessing only) and the shards are
    gathered, so each image is encoded once. Returns a float32 (N, dim) tensor on the split's device."""
    n = len(split)
    mine = torch.cat([encode(x01).float() for x01, _ in split.batches(torch.arange(n)[rank::world], batch, 0, keys, workers)])
    if world == 1:
        return mine
    rows = math.ceil(n / world)
    padded = torch.zeros(rows, mine.shape[1], device=mine.device)
    padded[:len(mine)] = mine
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.stack(gathered, 1).reshape(rows * world, -1)[:n]  # row k * world + r is image k * world + r


def probe_lr(step, steps_per_epoch, epochs, lr, schedule):
    """cosine: decay per step to zero at the end; step: x0.1 after every ceil(epochs / 3) epochs."""
    if schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * step / (epochs * steps_per_epoch)))
    return lr * 0.1 ** (step // steps_per_epoch // math.ceil(epochs / 3))


def fit_linear_head(features, labels, classes, epochs=90, batch=256, lr=0.1, weight_decay=0.0, nesterov=True,
                    schedule="cosine", seed=0):
    """A linear classifier on fixed features: BatchNorm without affine parameters (it standardises each
    feature, as MAE's linear probe does), then Linear(dim, classes) starting from zero; SGD with momentum
    0.9, the lr schedule per step, cross-entropy, a seeded order per epoch. It draws nothing from torch's
    global random state. Returns the head in eval() mode."""
    n, dim = features.shape
    head = nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, classes)).to(features.device)
    nn.init.zeros_(head[1].weight), nn.init.zeros_(head[1].bias)
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


def accuracy(scores, labels):
    """Top-1 and top-5 accuracy (%) of class scores (N, classes) against labels (N,); top-5 is top-all when
    there are fewer than five classes."""
    labels = labels.to(scores.device)
    top = scores.topk(min(5, scores.shape[1]), 1).indices
    return (100 * (top[:, 0] == labels).float().mean().item(), 100 * (top == labels[:, None]).any(1).float().mean().item())


@torch.no_grad()
def knn_scores(bank, bank_labels, queries, classes, k=200, t=0.1):
    """Weighted kNN on cosine similarity: the k nearest bank features of each query vote for their class
    with weight exp(cos / t). bank (M, dim) and queries (N, dim) need not be normalised. Returns (N, classes)."""
    bank, queries = F.normalize(bank, dim=1), F.normalize(queries, dim=1)
    votes = torch.zeros(len(queries), classes, device=queries.device)
    for start in range(0, len(queries), 1024):  # (1024, M) similarities at a time
        sim, idx = (queries[start:start + 1024] @ bank.T).topk(min(k, len(bank)), dim=1)
        votes[start:start + 1024].scatter_add_(1, bank_labels.to(bank.device)[idx], torch.exp(sim / t))
    return votes
