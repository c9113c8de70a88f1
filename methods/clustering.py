"""Scores of a representation that need no labels to fit (not in the paper): k-means on the frozen encoder's
features, and the three usual ways to read clusters against labels afterwards.

    # K = the classes by default; linear_eval.py's flags, and the k-means' own
    python -m methods.clustering --checkpoint runs/cifar10-aavae/checkpoint.pt --dataset cifar10 --data_path data
    python -m methods.clustering --random_init --encoder resnet18 --clusters 16 --dataset folder --data_path D

    km = kmeans(train_features, k, restarts=10, seed=0)             # k-means++ start, Lloyd, the best inertia kept
    test_assign, _ = nearest(test_features, km.centroids)
    scores(km.assign, train_labels, test_assign, test_labels, k, classes)   # majority, Hungarian, NMI

k-means runs where the features are (a GPU for ImageNet's), taking distances for BLOCK rows at a time, so that
the (N, K) distance matrix is never whole. No installed library does that (scikit-learn's runs on the host
and is not a requirement); the tests hold this one to scikit-learn's inertia on small cases. The Hungarian
matching (Kuhn 1955, in the shortest-augmenting-path form) is a K x K problem solved on the host.
"""
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

import linear_eval
from util.misc import UserError, generator, run_cli

BLOCK = 65536  # rows whose squared distances to every centroid are taken at a time (256 MB at K = 1,000)


def sq_distances(x, c):
    """||x_i - c_j||^2 for rows x (n, d) and centroids c (k, d) -> (n, k), through the expanded product."""
    return (x.square().sum(1, keepdim=True) - 2 * x @ c.T + c.square().sum(1)).clamp_(min=0)


@torch.no_grad()
def nearest(x, centroids, block=BLOCK):
    """The nearest centroid of each row of x and the squared distance to it: (n,) long, (n,) float32."""
    assign = torch.empty(len(x), dtype=torch.long, device=x.device)
    dist = torch.empty(len(x), device=x.device)
    for s in range(0, len(x), block):
        dist[s:s + block], assign[s:s + block] = sq_distances(x[s:s + block], centroids).min(1)
    return assign, dist


def kmeans_pp(x, k, g, block=BLOCK):
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; the greedy form scikit-learn uses): the first
    centroid a uniform row; each next one the best, by the inertia it leaves, of 2 + ln k candidate rows drawn
    with probability proportional to their squared distance to the nearest centroid so far."""
    trials = 2 + int(math.log(k))
    centroids = [x[torch.randint(len(x), (1,), device=x.device, generator=g)]]
    closest = nearest(x, centroids[0], block)[1].double()
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # every row sits on a centroid already: any rows will do
            picks = torch.randint(len(x), (trials,), device=x.device, generator=g)
        else:  # inverse CDF: no category limit, unlike torch.multinomial on CUDA
            u = torch.rand(trials, device=x.device, generator=g, dtype=torch.float64) * total
            picks = torch.searchsorted(closest.cumsum(0), u).clamp_(max=len(x) - 1)
        left = torch.zeros(trials, dtype=torch.float64, device=x.device)  # the inertia each candidate leaves
        for s in range(0, len(x), block):
            d = sq_distances(x[s:s + block], x[picks]).double()
            left += torch.minimum(d, closest[s:s + block, None]).sum(0)
        best = picks[left.argmin()].view(1)
        centroids.append(x[best])
        closest = torch.minimum(closest, nearest(x, centroids[-1], block)[1].double())
    return torch.cat(centroids)


@dataclass
class KMeans:
    centroids: torch.Tensor  # (k, d)
    assign: torch.Tensor  # (n,) the cluster of each row
    inertia: float  # sum of squared distances of the rows to their centroids
    iterations: int
    restart: int  # which restart it was


@torch.no_grad()
def lloyd(x, centroids, iters, tol, block=BLOCK):
    """Lloyd's iterations from `centroids` until no row changes cluster, the centroids move by less than
    tol (summed squared shift), or `iters` pass. A cluster left empty takes the row farthest from its own
    centroid (as scikit-learn does), so that k clusters remain. Returns KMeans of the final centroids."""
    k = len(centroids)
    assign = None
    for it in range(1, iters + 1):
        new_assign, dist = nearest(x, centroids, block)
        counts = torch.bincount(new_assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, new_assign, x)
        for j in (counts == 0).nonzero()[:, 0].tolist():  # rare: one row each, the farthest left
            far = int(dist.argmax())
            sums[j], counts[j], dist[far] = x[far], 1, 0
        moved = centroids
        centroids = sums / counts[:, None].to(sums.dtype)
        stable = assign is not None and torch.equal(assign, new_assign)
        assign = new_assign
        if stable or (centroids - moved).square().sum() <= tol:
            break
    assign, dist = nearest(x, centroids, block)
    return KMeans(centroids, assign, dist.double().sum().item(), it, 0)


def kmeans(x, k, restarts=10, seed=0, iters=300, tol=1e-4, block=BLOCK):
    """k-means on the rows of x (n, d), float32 on any device: `restarts` seeded k-means++ starts, each
    refined by Lloyd's iterations, the one of lowest inertia kept. tol is relative to the rows' mean
    variance per dimension, as scikit-learn's. Every draw comes from a generator on x's device keyed by
    (seed, restart): the same call gives the same clusters."""
    if not 1 <= k <= len(x):
        raise ValueError(f"k-means needs 1 <= k <= {len(x)} rows, got k = {k}")
    x = x.float()
    tol = tol * x.var(0).mean().item()
    best = None
    for r in range(restarts):
        start = kmeans_pp(x, k, generator(x.device, "kmeans", seed, r), block)
        km = lloyd(x, start, iters, tol, block)
        km.restart = r
        if best is None or km.inertia < best.inertia:
            best = km
    return best


# ----------------------------------------------------------------------------------------------------
# Reading clusters against labels


def contingency(assign, labels, k, classes):
    """(k, classes) counts of rows in cluster i with label j."""
    return torch.bincount(assign.cpu() * classes + labels.cpu(), minlength=k * classes).view(k, classes)


def hungarian(cost):
    """The assignment of rows to distinct columns of least total cost, for a cost matrix (n, m) with n <= m
    (transposed otherwise): the shortest augmenting path form of the Hungarian method, O(n^2 m), with the
    column loop vectorised. Returns col (n,): row i goes to column col[i] (for n > m, row[j] per column)."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.shape[0] > cost.shape[1]:
        return hungarian(cost.T)
    n, m = cost.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)  # the dual potentials of rows and columns (index 0 unused)
    match = np.zeros(m + 1, dtype=np.int64)  # match[j]: the row (1-based) on column j; 0 none
    for i in range(1, n + 1):
        match[0], j0 = i, 0  # column 0 is the virtual start of the path from row i
        shortest, way = np.full(m + 1, np.inf), np.zeros(m + 1, dtype=np.int64)
        used = np.zeros(m + 1, dtype=bool)
        while match[j0]:
            used[j0] = True
            row = match[j0]
            reduced = cost[row - 1] - u[row] - v[1:]
            better = ~used[1:] & (reduced < shortest[1:])
            shortest[1:][better], way[1:][better] = reduced[better], j0
            free = np.flatnonzero(~used[1:]) + 1
            j1 = free[np.argmin(shortest[free])]
            delta = shortest[j1]
            u[match[used]] += delta
            v[used] -= delta
            shortest[~used] -= delta
            j0 = j1
        while j0:  # flip the path's matches back to its start
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    col = np.zeros(n, dtype=np.int64)
    taken = np.flatnonzero(match[1:])  # the columns that hold a row
    col[match[1:][taken] - 1] = taken
    return col


def entropy(counts):
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(assign, labels):
    """Normalised mutual information of two labellings, I(U; V) / ((H(U) + H(V)) / 2) (the arithmetic
    normalisation, scikit-learn's default): 1 for the same partition up to names, near 0 for independent
    ones; 1 when both put every row in one group."""
    a, b = np.asarray(assign), np.asarray(labels)  # tensors on the host, arrays or lists
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.bincount(a * (b.max() + 1) + b, minlength=(a.max() + 1) * (b.max() + 1)).reshape(a.max() + 1, -1)
    hu, hv = entropy(joint.sum(1)), entropy(joint.sum(0))
    if hu == 0 and hv == 0:
        return 1.0
    p = joint / joint.sum()
    outer = p.sum(1, keepdims=True) * p.sum(0, keepdims=True)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / outer[nz])).sum())
    return max(0.0, mi) / ((hu + hv) / 2)


def scores(train_assign, train_labels, test_assign, test_labels, k, classes):
    """Clusters read against labels: each cluster's label fitted on the training rows and scored on the test
    rows. "majority": each cluster takes the most frequent label of its training members (any k);
    "hungarian" (k = classes only): the one-to-one matching of clusters to classes that agrees with the most
    training rows; "nmi": of the test rows' clusters and labels. Top-1 in %, and "correct", the per-test-row
    hits of the majority reading (and "hungarian_correct"), in the test split's order."""
    table = contingency(train_assign, train_labels, k, classes)
    test_labels = test_labels.cpu()
    out = {}
    readings = {"majority": table.argmax(1)}
    if k == classes:
        readings["hungarian"] = torch.from_numpy(hungarian(-table.numpy()))
    for name, label_of in readings.items():
        hit = (label_of[test_assign.cpu()] == test_labels).to(torch.uint8)
        out[f"{name}_top1"] = 100 * hit.double().mean().item()
        out[f"{name}_correct"] = hit.tolist()
    out["nmi"] = nmi(test_assign.cpu(), test_labels)
    return out


def argmax_rule(bank_probs, bank_labels, test_assign, test_labels):
    """The AAE paper's reading of a clustering y (Makhzani et al., unsupervised clustering): each cluster i takes the
    label of the one bank image with the highest q(y = i | x), and every test image the label of its cluster.
    bank_probs (M, K) are q(y|x) of labelled images that the evaluation may read (held out of what is scored);
    returns the clusters' labels, the test top-1 in % and the per-image hits."""
    label_of = bank_labels.cpu()[bank_probs.float().argmax(0).cpu()]
    hit = (label_of[test_assign.cpu()] == test_labels.cpu()).to(torch.uint8)
    return label_of, 100 * hit.double().mean().item(), hit


# ----------------------------------------------------------------------------------------------------
# The command: linear_eval.py's encoder, data and result.json, with k-means as its mode


@torch.no_grad()
def cluster(args, train, test, spec, encoder, info, rank, world, amp, projection=None):
    """The evaluation (result.json): k-means (kmeans: k-means++ starts, the lowest inertia of --restarts kept) on the frozen
    encoder's L2-normalised pooled features of the training split, with no labels; then the clusters read
    against the labels (scores): each cluster's majority training label, the best one-to-one
    matching of clusters to classes (k = classes), both scored on the test split through each test image's
    nearest centroid, and the NMI of the test images' clusters and labels. Every rank holds all features and
    computes the same clusters, as the cached probe trains the same head."""
    train_f = linear_eval.cached_features(encoder, train, spec, args, info, rank, world, amp, normalize=True)
    test_f = linear_eval.cached_features(encoder, test, spec, args, info, rank, world, amp, normalize=True)
    classes = linear_eval.num_classes(train)
    k = args.clusters or classes
    if k > len(train):
        raise UserError(f"--clusters {k} exceeds the {len(train)} training images")
    t0 = time.perf_counter()
    km = kmeans(train_f, k, args.restarts, args.seed, args.kmeans_iters)
    test_assign = nearest(test_f, km.centroids)[0]
    read = scores(km.assign, train.labels, test_assign, test.labels, k, classes)
    sizes = torch.bincount(km.assign, minlength=k)
    return {"top1": read["majority_top1"], "test_images": len(test), "clusters": k, "classes": classes,
            "features": "pooled, L2-normalised", "inertia": km.inertia, "restarts": args.restarts,
            "best_restart": km.restart, "iterations": km.iterations, "kmeans_seconds": time.perf_counter() - t0,
            "cluster_sizes": sizes.tolist(), **{k_: v for k_, v in read.items() if k_ != "majority_correct"},
            "correct": read["majority_correct"], "test_clusters": test_assign.tolist(), "test_labels": test.labels.tolist()}


def get_args_parser():
    p = linear_eval.get_args_parser("methods/clustering.py", {"cluster": cluster}, default="cluster")
    p.description = __doc__.split("\n\n")[0]
    g = p.add_argument_group("k-means")
    g.add_argument("--clusters", type=int, default=None, help="k of k-means (default: the number of classes)")
    g.add_argument("--restarts", type=int, default=10, help="seeded k-means++ starts, the lowest inertia kept")
    g.add_argument("--kmeans_iters", type=int, default=300, help="most Lloyd iterations per start")
    return p


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    return run_cli("methods/clustering.py", lambda: linear_eval.evaluate(linear_eval.validate(args), {"cluster": cluster}))


if __name__ == "__main__":
    main()
