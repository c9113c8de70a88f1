"""The controls, SimCLR and supervised training: the reference rows trained in the autoencoders' pipeline (both
under torchrun, and NT-Xent over two processes: tests/test_distributed.py)."""
import contextlib
import math

import pytest
import torch

import aavae
from methods import controls
from util import data
from conftest import read_log, setup_run, tiny_args
from test_train import run_error, tensors_of


def nt_xent_by_hand(z1, z2, t):
    """Chen et al. 2020, Eq. 1, one anchor at a time in plain Python: views 0..n-1 are the first views, n..2n-1
    the second, and the positive of view i is the other view of its image."""
    views = [[float(v) for v in row] for row in torch.cat([z1, z2])]
    n2 = len(views)
    cos = lambda a, b: sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    total = 0.0
    for i in range(n2):
        positive = (i + n2 // 2) % n2
        denominator = sum(math.exp(cos(views[i], views[k]) / t) for k in range(n2) if k != i)
        total += -math.log(math.exp(cos(views[i], views[positive]) / t) / denominator)
    return total / n2


def test_nt_xent_equals_a_plain_loop_over_the_anchors():
    g = torch.Generator().manual_seed(0)
    for n, t in ((5, 0.5), (3, 0.1), (8, 1.0)):
        z1, z2 = torch.randn(2, n, 7, generator=g)
        assert controls.nt_xent_loss(z1, z2, t).item() == pytest.approx(nt_xent_by_hand(z1, z2, t), rel=1e-5)


def test_the_positive_of_a_view_is_the_other_view_of_its_image():
    z1 = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    matched = controls.nt_xent_loss(z1, z1 + 0.01 * torch.randn_like(z1), 0.5)
    shifted = controls.nt_xent_loss(z1, z1.roll(1, 0), 0.5)  # every second view belongs to another image
    assert matched < shifted - 1


def constant_colour_split(n=16):
    """n images, each one flat colour of its own: every crop of image k is image k's colour."""
    colours = torch.randperm(256, generator=torch.Generator().manual_seed(0))[:3 * n].view(n, 3, 1, 1)
    images = colours.expand(n, 3, 16, 16).to(torch.uint8).contiguous()
    spec = aavae.AugmentSpec(size=16, jitter=0.5, blur=False, mean=(0.5,) * 3, std=(0.25,) * 3)
    return data.Split(images, torch.arange(n) % 2, spec, torch.device("cpu"), seed=0), spec


def test_simclrs_step_feeds_the_encoder_two_views_of_each_image(folder, tmp_path, monkeypatch):
    args = setup_run(tiny_args(folder, tmp_path, "--method", "simclr"))[0]
    split, spec = constant_colour_split()
    model, optimizer, _ = controls.build(args, spec, torch.device("cpu"), 1)
    seen = []
    model.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].clone()))
    monkeypatch.setattr(aavae, "photometric", lambda x, spec, g: x)  # the crops alone: each keeps its image's colour
    batch = next(data.TrainBatches(split, 8, 0, 1, views=controls.VIEWS["simclr"], workers=0)(0, ("crops", 0, 0)))
    controls.step(model, optimizer, batch, spec, torch.Generator().manual_seed(0), args, contextlib.nullcontext)
    first, second = seen[0].chunk(2)
    assert len(first) == 8 and torch.allclose(first, second)  # row k of both halves: two views of image k
    assert not torch.allclose(first, first.roll(1, 0))  # and the images differ


@pytest.mark.parametrize("method", ["simclr", "supervised"])
def test_a_resumed_control_is_bit_identical_to_an_uninterrupted_one(folder, tmp_path, method):
    controls.main(tiny_args(folder, tmp_path / "straight", "--method", method, "--max_steps", "4"))
    controls.main(tiny_args(folder, tmp_path / "resumed", "--method", method, "--max_steps", "2"))
    controls.main(tiny_args(folder, tmp_path / "resumed", "--method", method, "--max_steps", "4"))
    a, b = tensors_of(tmp_path / "straight" / "checkpoint.pt"), tensors_of(tmp_path / "resumed" / "checkpoint.pt")
    assert a.keys() == b.keys() and not any(k.startswith("model.decoder") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [row["step"] for row in read_log(tmp_path / "resumed") if "loss" in row] == [1, 2, 3, 4]


def fast(folder, out, method, steps):
    return tiny_args(folder, out, "--method", method, "--max_steps", str(steps), "--base_batch", "8", "--lr", "2e-3",
                     "--warmup_epochs", "0", "--val_every", "1", "--log_every", "3")


@torch.no_grad()
def fresh_view_loss(model, batch, spec):
    """NT-Xent of two fresh views of every image of the batch: low when each view is closer in z to the other
    view of its image than to the views of the other images. BatchNorm on the batch's statistics, as in
    training (after a few steps the running ones are still far from them)."""
    _, v1, v2, _ = batch
    g = torch.Generator().manual_seed(5)
    z1, z2 = (model.train()(aavae.normalize(aavae.photometric(v, spec, g), spec)) for v in (v1, v2))
    return controls.nt_xent_loss(z1, z2, 0.5).item()


def test_a_short_simclr_run_lowers_its_loss_and_pulls_the_views_of_an_image_together(folder, tmp_path):
    # SimCLR's steps on 8 images, then fresh views of the same images: each now closer to its own other view
    args = setup_run(tiny_args(folder, tmp_path, "--method", "simclr"))[0]
    train, _, spec = aavae.load_data(args, torch.device("cpu"))
    eight = train.subset(torch.arange(8))
    model, optimizer, _ = controls.build(args, spec, torch.device("cpu"), 1)
    for group in optimizer.param_groups:
        group["lr"] = 1e-3
    stream = data.TrainBatches(eight, 8, 0, 1, views=2, workers=0)(0, ("crops", 0, 0))
    fresh = next(data.TrainBatches(eight, 8, 0, 1, views=2, workers=0)(0, ("fresh", 0, 0)))
    before = fresh_view_loss(model, fresh, spec)
    losses = [controls.step(model, optimizer, next(stream), spec, torch.Generator().manual_seed(s), args,
                                 contextlib.nullcontext)[0].item() for s in range(30)]
    assert sum(losses[-5:]) < sum(losses[:5])
    assert fresh_view_loss(model, fresh, spec) < before - 0.1


def test_supervised_training_fits_the_labels_of_the_augmented_views(folder, tmp_path):
    controls.main(fast(folder, tmp_path, "supervised", 9))
    log = [row for row in read_log(tmp_path) if "loss" in row]
    assert log[-1]["loss"] < 0.7 * log[0]["loss"]  # cross-entropy of the 24 images' labels, memorised
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    assert state["classifier.weight"].shape == (2, 512)  # one output per class of the folder


def test_flags_that_a_control_cannot_use_are_refused(folder, tmp_path, capsys):
    for extra, said in ((["--method", "simclr", "--decoder", "decoder18"], "is a control without a decoder"),
                        (["--method", "supervised", "--target", "augmented"], "is a control without a decoder"),
                        (["--method", "supervised", "--temperature", "0.1"], "--temperature is for --method simclr"),
                        (["--method", "simclr", "--temperature", "0"], "--temperature must be positive")):
        assert said in run_error(tiny_args(folder, tmp_path, *extra), capsys, controls.main)
    assert "needs labels" in run_error(["--dataset", "stl10", "--method", "supervised", "--output_dir", str(tmp_path)],
                                       capsys, controls.main)
    # aavae.py knows neither the controls' methods nor their flags
    assert "unrecognized arguments: --temperature" in run_error(tiny_args(folder, tmp_path, "--temperature", "0.1"), capsys)
    assert "invalid choice: 'simclr'" in run_error(tiny_args(folder, tmp_path, "--method", "simclr"), capsys)


def test_a_simclr_step_costs_two_views_of_the_encoder(folder, tmp_path):
    parse = lambda m: setup_run(tiny_args(folder, tmp_path, "--method", m))[0]
    spec = aavae.augment_spec(parse("simclr"))
    simclr, supervised = (controls.step_flops(parse(m), spec) for m in ("simclr", "supervised"))
    assert simclr == pytest.approx(2 * supervised, rel=0.01)  # the heads are a rounding error beside the encoder
    assert supervised < aavae.step_flops(parse("aaae"), spec)  # no decoder
