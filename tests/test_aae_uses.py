"""The adversarial autoencoder's other uses (methods/aae_uses.py): supervised, semi-supervised, clustering and
dimensionality reduction, plain and augmentation-augmented, in aavae.py's pipeline."""
import contextlib
import json
import math
import os
import signal

import pytest
import torch
import torch.nn.functional as F

from methods import aae, aae_uses
import aavae
from util import data
from util import misc
from conftest import MONITOR, read_log, tiny_args, write_subset
from test_train import run_error, tensors_of
from util.misc import generator

USES = sorted(aae_uses.USES)


@pytest.fixture(scope="module")
def subset(folder, tmp_path_factory):
    return write_subset(tmp_path_factory.mktemp("subset") / "labelled.txt")


def use_args(folder, out, method, subset, *extra):
    """A run of seconds (tiny_args's), with the subset's labels for a semi-supervised use."""
    labelled = ["--subset_file", subset] if "semi" in method else []
    return tiny_args(folder, out, "--method", method, *labelled, *extra)


def state_of(path):
    """Every tensor of a checkpoint: the model's, its optimiser's, the discriminators' with theirs, and the other
    phases' optimisers'."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    out = tensors_of(path)
    opt_state = lambda prefix, state: {f"{prefix}.{k}.{n}": v for k, s in state["state"].items() for n, v in s.items()}
    for name, part in ckpt["extra"].items():
        if name == "opts":
            for phase, state in part.items():
                out.update(opt_state(f"opts.{phase}", state))
            continue
        out.update({f"{name}.disc.{k}": v for k, v in part["disc"].items()})
        out.update(opt_state(f"{name}.opt", part["disc_opt"]))
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# each kind of use once, plain and augmented among them (the suite's time; an aa_ twin differs only in its input view,
# whose stream aavae.py's own resume test holds)
@pytest.mark.parametrize("method", ["supervised_aae", "aa_semi_aae", "cluster_aae", "aa_dimred_aae"])
def test_each_use_trains_logs_its_phases_and_resumes_bit_identically(folder, subset, tmp_path, monkeypatch, method):
    # The second run is stopped as a scheduler stops it, a SIGTERM after its first step (mid-epoch: 3 steps per
    # epoch), then run again: it ends where the uninterrupted run ends, discriminators and their Adams included.
    run = lambda out, steps, *more: aae_uses.main(use_args(folder, tmp_path / out, method, subset, "--max_steps", steps, *more))
    metrics = run("straight", "2", *MONITOR)
    real, calls = aae_uses.train_step, []

    def step(*a, **k):
        out = real(*a, **k)
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(aae_uses, "train_step", step)
    with pytest.raises(SystemExit) as stopped:
        run("resumed", "2")
    assert stopped.value.code == misc.EXIT_PREEMPTED
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["step"] == 1
    monkeypatch.undo()
    run("resumed", "2")
    assert_same(state_of(tmp_path / "straight" / "checkpoint.pt"), state_of(tmp_path / "resumed" / "checkpoint.pt"))
    use = aae_uses.USES[method]
    rows = [r for r in read_log(tmp_path / "straight") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)
    expect = {"recon", "disc_loss_z", "gen_loss_z"} | ({"disc_loss_y", "gen_loss_y"} if use.categorical else set())
    expect |= {"label_ce", "label_top1"} if use.kind == "semi" else {"head_hinge"} if use.kind == "dimred" else set()
    assert expect <= set(rows[0]) and not {"label_ce", "head_hinge"} - expect & set(rows[0])
    mine = {"supervised": "val_recon_other_label", "semi": "val_y_top1", "cluster": "val_cluster_nmi",
            "dimred": "val_cluster_nmi"}[use.kind]
    assert {mine, "val_linear_top1", "val_knn_top1", "val_active_units", "val_sim_same"} <= set(metrics)
    ckpt = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    assert set(ckpt["extra"]) == ({"style", "categorical", "opts"} if use.categorical else {"style", "opts"})
    assert set(ckpt["extra"]["opts"]) == {"gen"} | ({"semi"} if use.kind == "semi" else {"heads"} if use.kind == "dimred" else set())
    args = json.loads((tmp_path / "straight" / "args.json").read_text())
    assert args["clusters"] == (16 if use.kind in ("cluster", "dimred") else 2)
    assert args["latent_dim"] == (2 if use.kind == "dimred" else 128)
    assert (tmp_path / "straight" / "encoder.pth").exists()  # linear_eval.py probes it as any other row's


def scrambled(load, keep_fn, seed=0):
    """data.load_data, with the training labels outside keep_fn(train) permuted among themselves."""
    def wrapped(args, device, spec, probe=False):
        train, val = load(args, device, spec, probe)
        others = torch.ones(len(train), dtype=torch.bool)
        others[keep_fn(train, args)] = False
        idx = others.nonzero()[:, 0]
        labels = train.labels.clone()
        labels[idx] = (labels[idx] + 1) % 2  # every other label changed
        train.labels = labels.to(train.labels.device)
        if train.folder is not None:  # streamed: the workers read each image's label beside its file
            train.folder.samples = [(path, int(y)) for (path, _), y in zip(train.folder.samples, labels.tolist())]
        return train, val
    return wrapped


@pytest.mark.parametrize("method,keep,path", [("aa_semi_aae", data.label_subset, "--in_memory"),
                                              ("semi_aae", data.label_subset, "--no-in_memory"),
                                              ("cluster_aae", lambda t, a: [], "--in_memory")])
def test_only_the_labelled_subset_is_read(folder, subset, tmp_path, monkeypatch, method, keep, path):
    # The semi-supervised use trains on its subset's labels alone, the clustering use on none: changing every
    # other training label leaves every step the same, the images held in memory or streamed from disk.
    run = lambda out: aae_uses.main(use_args(folder, tmp_path / out, method, subset, "--max_steps", "2", path))
    run("labels")
    monkeypatch.setattr(data, "load_data", scrambled(data.load_data, keep))
    run("scrambled")
    assert_same(state_of(tmp_path / "labels" / "checkpoint.pt"), state_of(tmp_path / "scrambled" / "checkpoint.pt"))
    if "semi" in method:  # and the labels of the subset are read: changing them changes the steps
        monkeypatch.setattr(data, "load_data", scrambled(data.load_data, lambda t, a: []))
        run("subset-scrambled")
        a, b = (state_of(tmp_path / d / "checkpoint.pt") for d in ("labels", "subset-scrambled"))
        assert not torch.equal(a["model.categorical.mu.weight"], b["model.categorical.mu.weight"])


def test_the_decoder_reconstructs_the_original_while_the_encoder_sees_the_view(folder, subset, tmp_path, monkeypatch):
    args = aae_uses.validate(aae_uses.get_args_parser().parse_args(use_args(folder, tmp_path, "aa_semi_aae", subset)))
    train, _, spec = aavae.load_data(args, torch.device("cpu"))
    model, adam, phases = aae_uses.build(args, spec, torch.device("cpu"), 1, train)
    batch = next(data.TrainBatches(train, 8, 0, 1, 1, 0)(0, ("crops", 0, 0)))
    seen, real_forward, real_loss = {}, model.forward, aavae.reconstruction_loss

    def forward(x, labels=None):
        seen["input"] = x
        return real_forward(x, labels)

    def loss(x_hat, x):
        seen["target"] = x
        return real_loss(x_hat, x)

    monkeypatch.setattr(model, "forward", forward)
    monkeypatch.setattr(aavae, "reconstruction_loss", loss)
    aae_uses.train_step(model, adam, batch, spec, generator("cpu", "step", 0, 0, 0), args, contextlib.nullcontext, phases)
    x = aavae.normalize(batch[0], spec)
    assert torch.equal(seen["target"], x)
    assert seen["input"].shape[0] == 8  # the reconstruction phase's batch (the labelled images have their own phase)
    assert (seen["input"] - x).abs().mean() > 0.1  # the view, not the original


def test_the_categorical_prior_is_one_hot_and_uniform():
    g = generator("cpu", "test", 0)
    y = aae_uses.categorical_prior((60000, 6), g)
    assert set(y.unique().tolist()) == {0.0, 1.0} and torch.equal(y.sum(1), torch.ones(60000))
    share = y.mean(0)
    assert (share - 1 / 6).abs().max() < 0.01, share  # 6 sigma of a binomial share is 0.009


def test_the_discriminators_losses_on_a_known_case(folder, tmp_path):
    # A discriminator whose last layer gives every input the logit b: its loss is the mean over half prior
    # (label 1) and half codes (label 0) of softplus(-b) and softplus(b), the generator's loss softplus(-b).
    args = aae_uses.validate(aae_uses.get_args_parser().parse_args(tiny_args(folder, tmp_path, "--method", "cluster_aae",
                                                                             "--disc_hidden", "8", "--clusters", "4")))
    adv = aae.Adversary(args, torch.device("cpu"), 1, dim=4, sample_prior=aae_uses.categorical_prior)
    for b in (0.0, 1.5):
        with torch.no_grad():
            adv.disc[-1].weight.zero_(), adv.disc[-1].bias.fill_(b)
        y = F.softmax(torch.randn(10, 4), 1).requires_grad_()
        loss = adv.discriminator_step(y, generator("cpu", "test", 1))
        expect = 0.5 * (F.softplus(torch.tensor(-b)) + F.softplus(torch.tensor(b)))
        torch.testing.assert_close(loss, expect)
        with torch.no_grad():  # the step moved the discriminator: back to the constant
            adv.disc[-1].weight.zero_(), adv.disc[-1].bias.fill_(b)
        torch.testing.assert_close(adv.generator_loss(y), F.softplus(torch.tensor(-b)))
    torch.testing.assert_close(F.softplus(torch.tensor(0.0)), torch.tensor(math.log(2)))  # b = 0: log 2, a coin's guess


def test_the_cluster_heads_hinge():
    heads = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 10.0]])  # distances 3, 10 and sqrt(109)
    torch.testing.assert_close(aae_uses.head_hinge(heads, 4.0), torch.tensor(1 / 3))
    torch.testing.assert_close(aae_uses.head_hinge(heads, 12.0), torch.tensor((9 + 2 + (12 - math.sqrt(109))) / 3))


def test_the_uses_flags_belong_to_their_uses(folder, subset, tmp_path, capsys):
    err = lambda *a: run_error(tiny_args(folder, tmp_path, *a), capsys, main=aae_uses.main)
    assert "needs its labelled images" in err("--method", "semi_aae")
    assert "needs its labelled images" in err("--method", "semi_aae", "--subset_file", subset, "--label_fraction", "0.1")
    assert "the labelled phase is the semi-supervised use's" in err("--method", "cluster_aae", "--label_fraction", "0.1")
    assert "takes K = the classes" in err("--method", "semi_aae", "--subset_file", subset, "--clusters", "5")
    assert "cluster heads" in err("--method", "cluster_aae", "--head_margin", "2")
    assert "--clusters must be >= 2, got 1" in err("--method", "cluster_aae", "--clusters", "1")
    assert "reconstruct the original" in err("--method", "aa_cluster_aae", "--target", "augmented")
    assert "invalid choice: 'aavae'" in err("--method", "aavae")
    assert "--latent_dim must be positive, got 0" in err("--method", "aa_dimred_aae", "--latent_dim", "0")
    assert "needs labels, which STL-10's" in err("--method", "semi_aae", "--label_fraction", "0.1", "--dataset", "stl10")
    assert "not --method supervised_aae's" in err("--method", "supervised_aae", "--y_straight_through")
    for weight in aae_uses.NO_WEIGHTS:  # the merged step's loss weights: each phase is its own step now
        assert f"--{weight} no longer means anything: each phase" in err("--method", "semi_aae", "--subset_file", subset,
                                                                           f"--{weight}", "0.1")
    assert "--gen_lr must be >= 0, got -1.0" in err("--method", "cluster_aae", "--gen_lr", "-1")
    assert "the labelled phase is the semi-supervised use's" in err("--method", "cluster_aae", "--semi_lr", "0.1")
    assert "cluster heads" in err("--method", "cluster_aae", "--head_lr", "0.1")
    args = aae_uses.validate(aae_uses.get_args_parser().parse_args(use_args(folder, tmp_path, "semi_aae", subset,
                                                                             "--label_batch", "3")))
    with pytest.raises(aae_uses.UserError, match=r"--label_batch 3 \(global\) does not divide among 2 processes"):
        aae_uses.Phases(args, torch.device("cpu"), 2, None, None)  # as a rank of two
    assert "no training image is named" in err("--method", "semi_aae", "--subset_file", os.devnull, "--max_steps", "1")
    # aavae.py keeps its own methods: the uses run through methods/aae_uses.py, which resolves their flags
    assert "invalid choice: 'semi_aae'" in run_error(tiny_args(folder, tmp_path, "--method", "semi_aae"), capsys)


@pytest.mark.parametrize("method", ["semi_aae", "dimred_aae"])  # between them every phase (supervised: the resume test)
def test_each_phase_takes_its_own_optimiser_step(folder, subset, tmp_path, monkeypatch, method):
    """The AAE paper's phases, each its own step per mini-batch: reconstruction (the loop's optimiser), each
    discriminator, the generator (the encoder), and, where the use has them, the classification (y) and the heads."""
    counts, made = {}, {}
    build = aae_uses.build

    def kept(*a, **k):  # every optimiser the run makes, each counting its steps
        model, optimizer, phases = build(*a, **k)
        made.update(recon=optimizer, disc_z=phases.style.disc_opt, **phases.opts,
                    **({"disc_y": phases.categorical.disc_opt} if phases.categorical else {}))
        for opt in made.values():
            opt.register_step_post_hook(lambda o, *_: counts.__setitem__(id(o), counts.get(id(o), 0) + 1))
        return model, optimizer, phases

    monkeypatch.setattr(aae_uses, "build", kept)
    aae_uses.main(use_args(folder, tmp_path / "run", method, subset, "--max_steps", "3",
                           "--val_every", "100"))
    use = aae_uses.USES[method]
    expect = {"recon", "disc_z", "gen"} | ({"disc_y"} if use.categorical else set())
    expect |= {"semi"} if use.kind == "semi" else {"heads"} if use.kind == "dimred" else set()
    assert set(made) == expect and {name: counts.get(id(opt), 0) for name, opt in made.items()} == dict.fromkeys(expect, 3)
    held = {name: {id(p) for g in opt.param_groups for p in g["params"]} for name, opt in made.items()}
    model = aae_uses.load_model(str(tmp_path / "run" / "checkpoint.pt"), "cpu")[0]
    assert len(held["gen"]) == len([*model.encoder.parameters(), *model.projection.parameters(),
                                    *(model.categorical.parameters() if model.categorical else [])])
    assert held["gen"] < held["recon"] and ("semi" not in held or held["semi"] < held["gen"])


@pytest.fixture(scope="module")
def trained(folder, subset, tmp_path_factory):
    """One two-step run of each use that the evaluations read."""
    root = tmp_path_factory.mktemp("uses")
    for method in ("aa_semi_aae", "cluster_aae", "aa_supervised_aae", "aa_dimred_aae"):
        aae_uses.main(use_args(folder, root / method, method, subset, "--max_steps", "2"))
    aavae.main(tiny_args(folder, root / "aavae", "--max_steps", "1"))
    return root


def evaluate(folder, run, mode, out, *extra):
    return aae_uses.main(["evaluate", "--checkpoint", str(run / "checkpoint.pt"), "--mode", mode, "--dataset", "folder",
                          "--data_path", folder, "--workers", "0", "--batch_size", "8", "--output_dir", str(out), *extra])


def test_the_y_head_is_scored_as_a_classifier_or_as_clusters(folder, trained, tmp_path, capsys):
    semi = evaluate(folder, trained / "aa_semi_aae", "head", tmp_path / "semi")
    assert len(semi["correct"]) == semi["test_images"] == 8 and semi["top1"] == 100 * sum(semi["correct"]) / 8
    clusters = evaluate(folder, trained / "cluster_aae", "head", tmp_path / "clusters")
    assert clusters["clusters"] == 16 and len(clusters["test_clusters"]) == 8 and sum(clusters["cluster_sizes"]) == 24
    assert clusters["top1"] == clusters["majority_top1"] and "hungarian_top1" not in clusters  # K != classes
    assert 0 <= clusters["nmi"] <= 1
    assert 1 / 16 <= clusters["y_confidence"] <= 1  # the mean of softmax(y)'s largest entry on the training images
    verdict = torch.tensor(clusters["prior_verdict"])  # the categorical discriminator on each one-hot, from the checkpoint
    adversary = torch.load(trained / "cluster_aae" / "checkpoint.pt", weights_only=False)["extra"]["categorical"]["disc"]
    last = torch.eye(16) @ adversary["0.weight"].T + adversary["0.bias"]  # the same network by hand: Linear-ReLU x2, Linear
    last = torch.relu(torch.relu(last) @ adversary["2.weight"].T + adversary["2.bias"]) @ adversary["4.weight"].T + adversary["4.bias"]
    torch.testing.assert_close(verdict, torch.sigmoid(last).squeeze(1))
    assert "which the supervised AAE does not have" in run_error(
        ["evaluate", "--checkpoint", str(trained / "aa_supervised_aae" / "checkpoint.pt"), "--mode", "head", "--dataset",
         "folder", "--data_path", folder, "--output_dir", str(tmp_path / "bad")], capsys, main=aae_uses.main)
    assert "not a checkpoint.pt of methods/aae_uses.py" in run_error(
        ["evaluate", "--checkpoint", str(trained / "aavae" / "checkpoint.pt"), "--mode", "head", "--dataset", "folder",
         "--data_path", folder, "--output_dir", str(tmp_path / "bad2")], capsys, main=aae_uses.main)


def test_the_style_grid_and_the_maps(folder, trained, tmp_path):
    grid = evaluate(folder, trained / "aa_supervised_aae", "grid", tmp_path / "grid", "--num_images", "3")
    from PIL import Image
    assert Image.open(tmp_path / "grid" / "grid.png").size == (3 * 17 + 1, 3 * 17 + 1)  # original + 2 classes, 3 rows
    assert grid["recon_own_label"] > 0 and grid["recon_other_label"] > 0
    dimred = evaluate(folder, trained / "aa_dimred_aae", "map", tmp_path / "dimred")
    assert dimred["latent"] == "W y + z" and dimred["map"] == "the code itself" and len(dimred["coords"]) == 8
    heads = torch.load(trained / "aa_dimred_aae" / "checkpoint.pt", weights_only=False)["model"]["heads"]
    gaps = torch.pdist(heads.float())  # the K (K - 1) / 2 distances between the heads, recorded beside the margin
    assert dimred["head_pairs"] == len(gaps) and dimred["head_min_distance"] == pytest.approx(gaps.min().item(), rel=1e-5)
    assert dimred["head_pairs_within_margin"] == int((gaps < dimred["head_margin"]).sum())
    pca = evaluate(folder, trained / "aavae", "map", tmp_path / "aavae")
    assert pca["latent"] == "mu" and pca["map"] == "two principal components" and "head_margin" not in pca
    # BatchNorm in eval mode for both kinds of map: the test images' points do not depend on how they are batched
    # (the test split is in class order, so a batch's own statistics would also blur the classes)
    for run, ref in (("aavae", pca), ("aa_dimred_aae", dimred)):
        other = evaluate(folder, trained / run, "map", tmp_path / f"{run}-b3", "--batch_size", "3")
        torch.testing.assert_close(torch.tensor(other["coords"]), torch.tensor(ref["coords"]), atol=1e-4, rtol=1e-4)
    coords = torch.tensor(pca["coords"])
    torch.testing.assert_close(coords.mean(0), torch.zeros(2), atol=1e-3, rtol=0)  # centred
    assert coords[:, 0].var() >= coords[:, 1].var()  # the first component carries the most variance
    if pca["picture"]:  # drawn where matplotlib is installed
        assert (tmp_path / "aavae" / "map.png").exists()


def test_the_discriminator_learns_prior_from_codes_and_the_generator_pulls_codes_to_the_prior(folder, tmp_path):
    """Not a constant logit (which a swap of real and fake passes): a random discriminator, codes far from the prior.
    Its loss is BCE with the prior's samples real (1) and the codes fake (0); one step widens the gap between D on the
    prior and D on the codes; the generator's loss falls as the codes move along minus its gradient. Swapping the labels
    anywhere fails each of these."""
    args = aae_uses.validate(aae_uses.get_args_parser().parse_args(tiny_args(folder, tmp_path, "--method", "aa_semi_aae",
                                                                             "--disc_hidden", "16", "--subset_file", "x")))
    torch.manual_seed(0)
    adv = aae.Adversary(args, torch.device("cpu"), 1, dim=3)
    for group in adv.disc_opt.param_groups:
        group["lr"] = 1e-2
    codes = torch.full((64, 3), 3.0) + 0.1 * torch.randn(64, 3)
    prior = torch.randn((64, 3), generator=generator("cpu", "test", 5))  # what the step draws from the same generator
    with torch.no_grad():
        d_prior, d_codes = adv.disc(prior), adv.disc(codes)
    expect = 0.5 * (F.softplus(-d_prior).mean() + F.softplus(d_codes).mean())
    torch.testing.assert_close(adv.discriminator_step(codes, generator("cpu", "test", 5)), expect)
    with torch.no_grad():  # the step widens the gap between the prior's logits and the codes'
        assert adv.disc(prior).mean() - adv.disc(codes).mean() > d_prior.mean() - d_codes.mean()
    adv.disc_opt.zero_grad(set_to_none=True)
    z = codes.clone().requires_grad_()
    fool = adv.generator_loss(z)
    torch.testing.assert_close(fool, F.softplus(-adv.disc(codes)).mean())
    fool.backward()
    assert adv.generator_loss(codes - 0.5 * z.grad / z.grad.norm()) < fool
    assert all(p.grad is None for p in adv.disc.parameters())  # the generator's step leaves the discriminator alone


@pytest.mark.parametrize("kind", ["supervised", "semi", "cluster", "dimred"])
def test_the_decoder_reads_y_or_the_label(kind):
    """Each use's decoder input carries y (the label, for the supervised use): two images with the same z and another
    y are decoded differently, and alike when y is the same."""
    torch.manual_seed(0)
    model = aae_uses.UsesAAE(kind, "resnet18", "decoder18", "cifar", 2 if kind == "dimred" else 8, 16, 4).eval()
    z = torch.randn(1, 2 if kind == "dimred" else 8).repeat(3, 1)
    y = F.one_hot(torch.tensor([0, 1, 0]), 4).float()
    with torch.no_grad():
        out = model.image_decoder(model.code(y, z))
    assert not torch.allclose(out[0], out[1], atol=1e-4) and torch.equal(out[0], out[2])
