"""methods/clustering.py, its k-means and its command: k-means finds clusters that are there and invents none
that are not, equals a reference k-means's inertia, and the three readings of clusters against labels."""
import itertools
import json

import numpy as np
import pytest
import torch

from methods import clustering
import linear_eval
from test_linear_eval import colour_folder, probe_args
from test_train import run_error


def blobs(k=5, per=80, dim=16, spread=0.05, seed=0):
    """k well separated Gaussian clusters: centres on the unit sphere scaled by 4, rows a small spread around them."""
    g = torch.Generator().manual_seed(seed)
    centres = 4 * torch.nn.functional.normalize(torch.randn(k, dim, generator=g), dim=1)
    truth = torch.arange(k).repeat_interleave(per)
    x = centres[truth] + spread * torch.randn(k * per, dim, generator=g)
    order = torch.randperm(len(x), generator=g)
    return x[order], truth[order]


def test_kmeans_finds_clusters_that_are_there_whatever_the_block_size():
    x, truth = blobs()
    km = clustering.kmeans(x, 5, restarts=3, seed=0)
    assert clustering.nmi(km.assign, truth) == pytest.approx(1.0)
    assert sorted(torch.bincount(km.assign).tolist()) == [80] * 5
    same = clustering.kmeans(x, 5, restarts=3, seed=0, block=7)  # 7 rows of distances at a time
    assert torch.equal(same.assign, km.assign) and same.inertia == pytest.approx(km.inertia, rel=1e-5)
    test_x, test_truth = blobs(seed=0)[0][:50], blobs(seed=0)[1][:50]
    read = clustering.scores(km.assign, truth, clustering.nearest(test_x, km.centroids)[0], test_truth, 5, 5)
    assert read["majority_top1"] == read["hungarian_top1"] == 100.0 and read["nmi"] == pytest.approx(1.0)
    assert len(read["majority_correct"]) == len(read["hungarian_correct"]) == 50


def test_kmeans_invents_no_structure_in_noise():
    g = torch.Generator().manual_seed(1)
    x, labels = torch.randn(2000, 32, generator=g), torch.randint(0, 10, (2000,), generator=g)
    km = clustering.kmeans(x[:1500], 10, restarts=2, seed=0)
    test = clustering.nearest(x[1500:], km.centroids)[0]
    read = clustering.scores(km.assign, labels[:1500], test, labels[1500:], 10, 10)
    assert read["nmi"] < 0.05  # labels drawn independently of the rows: nothing to find
    assert read["hungarian_top1"] < 16 and read["majority_top1"] < 16  # chance is 10 %


def test_kmeans_reaches_the_inertia_of_scikit_learns():
    KMeans = pytest.importorskip("sklearn.cluster").KMeans
    for seed, (n, dim, k) in enumerate([(400, 8, 4), (600, 16, 10), (300, 4, 20)]):
        x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
        x[: n // 2] += 3  # some structure, and local optima to fall into
        ours = clustering.kmeans(x, k, restarts=5, seed=seed).inertia
        ref = KMeans(k, n_init=5, random_state=seed).fit(x.numpy()).inertia_
        assert ours == pytest.approx(ref, rel=0.01), (n, k)


def test_kmeans_keeps_k_clusters_when_rows_repeat():
    x = torch.tensor([[0.0, 0.0]] * 6 + [[1.0, 1.0]] * 6)  # two distinct rows for three clusters
    km = clustering.kmeans(x, 3, restarts=2, seed=0)
    assert torch.isfinite(km.centroids).all() and km.inertia == pytest.approx(0.0)
    with pytest.raises(ValueError):
        clustering.kmeans(x, 13)


def test_the_hungarian_matching_is_the_cheapest_of_all_permutations():
    rng = np.random.default_rng(0)
    for n in range(1, 7):
        for _ in range(10):
            cost = rng.integers(0, 9, (n, n)).astype(float)
            col = clustering.hungarian(cost)
            assert sorted(col.tolist()) == list(range(n))
            best = min(cost[np.arange(n), list(p)].sum() for p in itertools.permutations(range(n)))
            assert cost[np.arange(n), col].sum() == best
    cost = rng.random((3, 5))  # more columns than rows: each row its own column
    col = clustering.hungarian(cost)
    best = min(cost[np.arange(3), list(p)].sum() for p in itertools.permutations(range(5), 3))
    assert len(set(col.tolist())) == 3 and cost[np.arange(3), col].sum() == pytest.approx(best)


def test_the_hungarian_matching_equals_scipys_on_a_large_problem():
    linear_sum_assignment = pytest.importorskip("scipy.optimize").linear_sum_assignment
    cost = np.random.default_rng(1).random((120, 120))
    rows, cols = linear_sum_assignment(cost)
    assert cost[np.arange(120), clustering.hungarian(cost)].sum() == pytest.approx(cost[rows, cols].sum())


def test_nmi_is_one_for_renamed_partitions_and_equals_scikit_learns():
    a = torch.tensor([0, 0, 1, 1, 2, 2])
    assert clustering.nmi(a, (a + 1) % 3 * 7) == pytest.approx(1.0)
    assert clustering.nmi([0, 0, 0], [1, 1, 1]) == 1.0 and clustering.nmi([0, 0, 1, 1], [0, 0, 0, 0]) == 0.0
    score = pytest.importorskip("sklearn.metrics").normalized_mutual_info_score
    rng = np.random.default_rng(2)
    for _ in range(5):
        u, v = rng.integers(0, 7, 300), rng.integers(0, 4, 300)
        v[:150] = u[:150] % 4  # half dependent
        assert clustering.nmi(u, v) == pytest.approx(score(v, u), abs=1e-12)


def test_majority_and_hungarian_readings_of_a_known_table():
    # clusters 0 and 1 are both mostly class 0; cluster 2 class 1, cluster 3 class 2
    train_assign = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    train_labels = torch.tensor([0, 0, 1, 0, 0, 2, 1, 1, 2, 2])
    test_assign, test_labels = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 2, 1, 2])
    read = clustering.scores(train_assign, train_labels, test_assign, test_labels, 4, 3)
    assert read["majority_correct"] == [1, 0, 1, 1] and read["majority_top1"] == 75.0
    assert "hungarian_top1" not in read  # k differs from the classes: no one-to-one matching
    read = clustering.scores(train_assign % 3, train_labels, test_assign % 3, test_labels, 3, 3)
    # per class, cluster 0 holds (2, 1, 2), cluster 1 (2, 0, 1), cluster 2 (0, 2, 0): the majority gives clusters
    # 0 and 1 both class 0; the matching gives cluster 0 class 2, cluster 1 class 0 (6 agreements against 5)
    assert read["majority_correct"] == [1, 0, 1, 0] and read["hungarian_correct"] == [0, 0, 1, 1]


def test_the_command_clusters_separable_images_and_writes_every_reading(tmp_path):
    data = colour_folder(tmp_path / "data")
    result = clustering.main(probe_args(data, tmp_path / "out", "--random_init", "--encoder", "resnet18",
                                        "--mode", "cluster", "--restarts", "3"))
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved == result and result["clusters"] == result["classes"] == 2
    assert result["majority_top1"] >= 90 and result["hungarian_top1"] >= 90 and result["nmi"] > 0.5, result
    assert len(result["correct"]) == len(result["hungarian_correct"]) == len(result["test_clusters"]) == 14
    assert sum(result["cluster_sizes"]) == 32 and result["top1"] == result["majority_top1"]
    more = clustering.main(probe_args(data, tmp_path / "k5", "--random_init", "--encoder", "resnet18",
                                      "--mode", "cluster", "--clusters", "5", "--restarts", "2"))
    assert more["clusters"] == 5 and "hungarian_top1" not in more and len(more["cluster_sizes"]) == 5


def test_cluster_flags_are_refused_where_they_mean_nothing(tmp_path, capsys):
    data = colour_folder(tmp_path / "data")
    base = probe_args(data, tmp_path / "out", "--random_init", "--encoder", "resnet18")
    assert "unrecognized arguments: --clusters 3" in run_error(base + ["--clusters", "3"], capsys, linear_eval.main)
    assert "--clusters must be positive" in run_error(base + ["--clusters", "0"], capsys, clustering.main)
    assert "exceeds the 32 training images" in run_error(base + ["--clusters", "40"], capsys, clustering.main)
    assert "belong to --mode finetune and linear" in run_error(base + ["--mode", "knn", "--label_fraction", "0.1"], capsys, linear_eval.main)


def test_the_probe_on_a_label_fraction_trains_on_those_images_only(tmp_path):
    data = colour_folder(tmp_path / "data")
    result = linear_eval.main(probe_args(data, tmp_path / "out", "--random_init", "--encoder", "resnet18",
                                         "--cached_features", "--label_fraction", "0.25", "--epochs", "3"))
    assert result["train_images"] == 8 and result["test_images"] == 14 and result["label_fraction"] == 0.25
    assert linear_eval.default_output_dir(linear_eval.validate(linear_eval.get_args_parser().parse_args(
        ["--random_init", "--encoder", "resnet18", "--cached_features", "--label_fraction", "0.01"]))).endswith(
        "eval-random-resnet18-linear-cached-0.01-cifar10")


def test_the_aae_papers_rule_labels_each_cluster_by_the_image_it_is_surest_of():
    # three clusters, five bank images: cluster 0 is surest of image 1 (label 7), cluster 1 of image 4 (label 2),
    # cluster 2 of image 0 (label 7); a majority vote would differ (cluster 0's members are mostly label 3)
    probs = torch.tensor([[0.1, 0.2, 0.7], [0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.8, 0.0]])
    bank_labels = torch.tensor([7, 7, 3, 3, 2])
    test_assign, test_labels = torch.tensor([0, 1, 2, 0]), torch.tensor([7, 2, 1, 3])
    labels, top1, hit = clustering.argmax_rule(probs, bank_labels, test_assign, test_labels)
    assert labels.tolist() == [7, 2, 7] and hit.tolist() == [1, 1, 0, 0] and top1 == 50.0
