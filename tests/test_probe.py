"""The cached-feature probe: a linear head on fixed features, checked against an independent fit."""
import json
import math
import os

import pytest
import torch

import linear_eval
from util import probe
from conftest import MINI, NO_MINI
from test_linear_eval import probe_args


def logistic_regression_top1(train_f, train_y, test_f, test_y, classes, l2=1e-3):
    """An independent multinomial logistic regression on standardised features, fitted by L-BFGS."""
    mean, std = train_f.mean(0), train_f.std(0) + 1e-5
    a, b = (train_f - mean) / std, (test_f - mean) / std
    w = torch.zeros(a.shape[1], classes, requires_grad=True)
    c = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, c], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(a @ w + c, train_y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return 100 * ((b @ w + c).argmax(1) == test_y).float().mean().item()


def blobs(n, classes=10, dim=32, seed=0):
    """Overlapping Gaussian classes: a linear classifier reaches well under 100 %."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 0.35
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + torch.randn(n, dim, generator=g), y


def test_the_cached_head_matches_an_independent_logistic_regression():
    (train_f, train_y), (test_f, test_y) = blobs(2000, seed=0), blobs(1000, seed=1)
    head = probe.fit_linear_head(train_f, train_y, 10, epochs=90, batch=256, lr=0.1)
    with torch.no_grad():
        ours = probe.accuracy(head(test_f), test_y)[0]
    reference = logistic_regression_top1(train_f, train_y, test_f, test_y, 10)
    assert 30 < reference < 90, reference  # neither trivial nor hopeless
    assert abs(ours - reference) <= 2, (ours, reference)


def test_knn_scores_vote_for_the_nearest_class():
    unit = lambda rows: torch.nn.functional.normalize(torch.tensor(rows), dim=1)
    votes = probe.knn_scores(unit([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), torch.tensor([0, 0, 1]),
                             unit([[1.0, 0.05], [0.1, 1.0]]), 2, k=2)
    assert votes.argmax(1).tolist() == [0, 1]
    assert votes[0, 0] == pytest.approx(2 * math.exp(1 / 0.1), rel=0.02)  # two near neighbours, cos ~ 1


def test_knn_over_bank_blocks_equals_knn_over_the_whole_bank(monkeypatch):
    g = torch.Generator().manual_seed(0)
    bank, queries = (torch.nn.functional.normalize(torch.randn(n, 16, generator=g), dim=1) for n in (1000, 300))
    labels = torch.randint(0, 5, (1000,), generator=g)
    whole = probe.knn_scores(bank, labels, queries, 5, k=50)
    monkeypatch.setattr(probe, "KNN_BLOCK", 64)  # 16 blocks, the last one short
    torch.testing.assert_close(probe.knn_scores(bank, labels, queries, 5, k=50), whole)


@pytest.mark.skipif(not os.path.isdir(MINI), reason=NO_MINI)
def test_on_real_images_the_cached_probe_matches_logistic_regression_on_the_same_features(tmp_path, monkeypatch):
    seen, real_build, real_features = {}, linear_eval.build, linear_eval.cached_features
    monkeypatch.setattr(linear_eval, "build", lambda *a: seen.setdefault("splits", real_build(*a)))
    monkeypatch.setattr(linear_eval, "cached_features", lambda *a, **k: seen.setdefault(id(a[1]), real_features(*a, **k)))
    flags = ["--random_init", "--encoder", "resnet18", "--batch_size", "256", "--workers", "2", "--train_limit", "512",
             "--image_size", "16"]
    result = linear_eval.main(probe_args(MINI, tmp_path, "--cached_features", *flags))
    assert json.loads((tmp_path / "result.json").read_text())["features"] == "cached"
    assert result["test_images"] == 1000 and result["epochs"] == 90
    train, test = seen["splits"][:2]
    train_f, test_f = seen[id(train)], seen[id(test)]  # the very features the probe's head trained on
    assert train_f.shape == (512, 512) and train_f.dtype == torch.float32
    reference = logistic_regression_top1(train_f.float(), train.labels, test_f.float(), test.labels, 10)
    assert abs(result["top1"] - reference) <= 2, (result["top1"], reference)
