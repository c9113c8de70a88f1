"""MNIST and the IWAE paper's own model (methods/iwae.py --arch mlp, methods/mlp.py): the IDX files and what is wrong
with them, the architecture against the data, the schedule of stages, the two objectives, the NLL estimate, a run
that resumes bit-identically, and its evaluation."""
import json
import math
import os

import numpy as np
import pytest
import torch

from conftest import ROOT, read_log
from methods import iwae, mlp
from test_train import run_error
from util import data

MNIST = os.path.join(ROOT, "..", "shared", "data", "mnist")


def write_idx(path, array, magic=None):
    array = np.asarray(array, dtype=np.uint8)
    magic = magic or {3: 2051, 1: 2049}[array.ndim]
    with open(path, "wb") as f:
        f.write(magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape) + array.tobytes())


def make_mnist(root, train=60, val=20, seed=0):
    """A small MNIST in its IDX files: blobs of a class-dependent place, so that the classes differ."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    for split, n in (("train", train), ("val", val)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for k, y in enumerate(labels):
            images[k, 4 + 2 * y:10 + 2 * y, 6:22] = 255
        images_file, labels_file = data.MNIST_FILES[split]
        write_idx(os.path.join(root, images_file), images)
        write_idx(os.path.join(root, labels_file), labels)
    return str(root)


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    return make_mnist(tmp_path_factory.mktemp("mnist"))


def mlp_args(root, out, *extra):
    return ["--method", "iwae", "--arch", "mlp", "--dataset", "mnist", "--data_path", root, "--batch_size", "20",
            "--base_batch", "20", "--lr", "1e-3", "--schedule", "stages", "--warmup_epochs", "0", "--epochs", "2",
            "--val_size", "0", "--val_samples", "7", "--log_every", "1", "--val_every", "1", "--output_dir", str(out), *extra]


def test_every_wrong_idx_file_is_one_sentence_naming_it(mnist, tmp_path, capsys):
    def broken(name, how):
        root = make_mnist(tmp_path / name, train=20, val=10)
        path = os.path.join(root, data.MNIST_FILES["train"][0 if how != "labels" else 1])
        if how == "magic":
            write_idx(path, np.zeros((20, 28, 28)), magic=2049)
        elif how == "truncated":
            with open(path, "r+b") as f:
                f.truncate(16 + 20 * 784 - 5)
        elif how == "labels":
            write_idx(path, np.zeros(19))
        elif how == "missing":
            os.remove(path)
        elif how == "size":
            write_idx(path, np.zeros((20, 32, 32)))
        return root, path

    for how, says in (("magic", "starts with magic number 2049, not 2051"), ("truncated", "truncated or corrupt"),
                      ("labels", "20 images but"), ("missing", "but not train-images-idx3-ubyte"),
                      ("size", "32 x 32 pixels")):
        root, path = broken(how, how)
        err = run_error(mlp_args(root, tmp_path / f"o-{how}"), capsys, iwae.main)
        assert says in err and (os.path.basename(path) in err), (how, err)
        assert not (tmp_path / f"o-{how}" / "checkpoint.pt").exists()
    short = tmp_path / "short.idx"
    short.write_bytes(b"\x00\x00")
    with pytest.raises(Exception, match="shorter than an IDX header"):
        data.read_idx(str(short), 1)


def test_the_papers_model_takes_mnist_and_the_resnet_takes_colour(mnist, folder, tmp_path, capsys):
    assert "choose --arch mlp with --dataset mnist" in run_error(
        mlp_args(mnist, tmp_path / "a", "--arch", "resnet"), capsys, iwae.main)
    assert "choose --arch mlp with --dataset mnist" in run_error(
        ["--arch", "mlp", "--dataset", "folder", "--data_path", folder, "--output_dir", str(tmp_path / "b")], capsys, iwae.main)
    assert "which MNIST has not" in run_error(mlp_args(mnist, tmp_path / "c", "--method", "aa_iwae"), capsys, iwae.main)
    assert "no warm-up" in run_error(mlp_args(mnist, tmp_path / "d", "--warmup_epochs", "1"), capsys, iwae.main)
    assert "IWAE paper's VAE row" in run_error(["--method", "vae", "--dataset", "folder", "--data_path", folder,
                                                 "--output_dir", str(tmp_path / "e")], capsys, iwae.main)


def test_the_stages_are_three_to_the_i_epochs_at_a_seventh_of_a_decade_less_each():
    assert [iwae.stage_of(e) for e in range(14)] == [0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3]
    assert iwae.stage_of(39) == 3 and iwae.stage_of(40) == 4 and iwae.stage_of(120) == 4 and iwae.stage_of(3279) == 7


def test_a_run_follows_the_stages_resumes_bit_identically_and_its_nll_is_evaluated(mnist, tmp_path):
    iwae.main(mlp_args(mnist, tmp_path / "straight", "--epochs", "5"))
    iwae.main(mlp_args(mnist, tmp_path / "resumed", "--epochs", "5", "--max_steps", "5"))
    iwae.main(mlp_args(mnist, tmp_path / "resumed", "--epochs", "5"))
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("straight", "resumed"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    steps = [r for r in read_log(tmp_path / "straight") if "loss" in r]
    assert len(steps) == 15  # 60 images, batch 20: 3 steps a pass, 5 passes
    for r in steps:  # the lr each step ran at: stage 0 for pass 1, stage 1 for passes 2-4, stage 2 for the fifth
        assert r["lr"] == pytest.approx(1e-3 * 10 ** (-iwae.stage_of((r["step"] - 1) // 3) / 7))
    assert sorted({r["lr"] for r in steps}) == pytest.approx([1e-3 * 10 ** (-2 / 7), 1e-3 * 10 ** (-1 / 7), 1e-3])
    val = [r for r in read_log(tmp_path / "straight") if "val_nll" in r]
    assert len(val) == 5 and all(r["val_images"] == 20 and 0 <= r["val_active_units"] <= 50 for r in val)
    args = json.loads((tmp_path / "straight" / "args.json").read_text())
    assert args["amp"] is False and args["latent_dim"] == 50 and args["monitor_images"] == 0
    result = iwae.main(["evaluate", "--checkpoint", str(tmp_path / "straight" / "checkpoint.pt"), "--samples", "30"])
    saved = json.loads((tmp_path / "evals" / "nll-straight" / "result.json").read_text())
    assert saved["nll"] == pytest.approx(result["nll"]) and saved["passes"] == 5 and saved["images"] == 20
    assert (saved["eval_samples"], saved["train_samples"], saved["method"]) == (30, 5, "iwae")
    assert saved["active_units"] == sum(v > 0.01 for v in saved["unit_variances"])
    # the same estimate, drawn in chunks of samples or at once; and the last validation's, at k = 7, lies above it
    model = mlp.BernoulliVAE()
    model.load_state_dict(torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["model"])
    x = iwae.binarized_val(data.Split(*data.read_mnist(mnist, "val"), None, torch.device("cpu"), 0))
    chunked = iwae.bound_and_units(model, x, 30, 10, 0, 1, chunk=7)[0]
    whole = iwae.bound_and_units(model, x, 30, 10, 0, 1, chunk=30)[0]
    assert -whole[0].item() / 20 == pytest.approx(saved["nll"]) and chunked[2:].tolist() == whole[2:].tolist()
    assert val[-1]["val_nll"] > saved["nll"] - 1.0  # fewer samples: a looser bound (up to the estimates' noise)
    with pytest.raises(SystemExit):  # a result is never overwritten silently
        iwae.main(["evaluate", "--checkpoint", str(tmp_path / "straight" / "checkpoint.pt"), "--samples", "30"])


def test_the_objectives_are_the_k_sample_bound_and_the_averaged_elbo():
    torch.manual_seed(0)
    log_w = torch.randn(5, 7) * 3
    assert iwae.objective(log_w, "iwae") <= iwae.objective(log_w, "vae")  # L_k >= mean ELBO (Jensen)
    assert iwae.objective(log_w[:1], "iwae") == pytest.approx(iwae.objective(log_w[:1], "vae").item())
    ref = -(torch.logsumexp(log_w, 0) - math.log(5)).mean()
    assert iwae.objective(log_w, "iwae") == pytest.approx(ref.item())
    # log w: a Bernoulli likelihood, the standard normal prior and q's density, each by hand
    model = mlp.BernoulliVAE(latent_dim=3)
    x = (torch.rand(2, 1, 28, 28) > 0.5).float()
    logits, z, mu, log_var = model(x, torch.randn(4, 2, 3))
    p = torch.sigmoid(logits)
    px = (x.flatten(1) * p.log() + (1 - x.flatten(1)) * (1 - p).log()).sum(-1)
    pz = torch.distributions.Normal(0, 1).log_prob(z).sum(-1)
    qz = torch.distributions.Normal(mu, torch.exp(0.5 * log_var)).log_prob(z).sum(-1)
    torch.testing.assert_close(mlp.log_weight(x, logits, z, mu, log_var), px + pz - qz, rtol=1e-4, atol=1e-3)


def test_the_papers_model_is_784_200_200_50_tanh_its_output_at_the_mean_image():
    mean = torch.rand(1, 28, 28)
    model = mlp.BernoulliVAE(mean_image=mean)
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(200, 784), (200,), (200, 200), (200,), (50, 200), (50,), (50, 200), (50,),
                      (200, 50), (200,), (200, 200), (200,), (784, 200), (784,)]
    assert sum(isinstance(m, torch.nn.Tanh) for m in model.modules()) == 4
    torch.testing.assert_close(torch.sigmoid(model.decoder[-1].bias), mean.flatten().clamp(0.001, 0.999))
    flops = [iwae.mlp_flops(50, k) for k in (1, 2, 3)]
    assert flops[2] - flops[1] == pytest.approx(flops[1] - flops[0]) and flops[1] > flops[0] > 0  # one decoder pass per sample


@pytest.mark.skipif(not os.path.isdir(MNIST), reason="needs MNIST's IDX files beside the repository")
def test_the_real_mnist_is_50000_train_and_10000_val_digits():
    train, val = data.read_mnist(MNIST, "train"), data.read_mnist(MNIST, "val")
    assert train[0].shape == (50000, 1, 28, 28) and val[0].shape == (10000, 1, 28, 28)
    assert train[1].bincount().min() > 4000 and val[1].bincount().min() > 800 and int(train[1].max()) == 9


def test_the_mnist_profile_trains_each_row_the_same_passes_and_sets_the_papers_numbers_beside(mnist, tmp_path, monkeypatch):
    import contextlib
    import io

    from experiments import grid
    monkeypatch.setattr(grid, "MNIST_NLL_SAMPLES", 100)  # the suite's time; the profile's 5,000
    out = tmp_path / "M"
    base = ["--profile", "mnist", "--data_path", mnist, "--output_dir", str(out), "--in_process", "--rows", "vae-k1,iwae-k5"]
    with contextlib.redirect_stdout(io.StringIO()):
        g = grid.main(base + ["--mnist_passes", "2"])
        grid.main(base + ["--mnist_passes", "4"])  # longer: the same runs continue, each scored again
    pretrain = [st.cmd for st in g.steps if st.kind == "pretrain"]
    flag = lambda cmd, name: cmd[cmd.index(name) + 1]
    assert [(flag(c, "--method"), flag(c, "--iw_samples")) for c in pretrain] == [("vae", "1"), ("iwae", "5")]
    for name in ("--epochs", "--batch_size", "--lr", "--schedule", "--arch"):
        assert len({flag(c, name) for c in pretrain}) == 1, name
    saved = json.loads((out / "results.json").read_text())["rows"]
    assert [r["row"] for r in saved] == ["vae-k1", "iwae-k5"]
    for r in saved:
        ev = json.loads((out / "evals" / f"nll-{r['row']}-p4" / "result.json").read_text())
        assert (r["nll"], r["passes"], r["eval_samples"], r["train_samples"]) == (ev["nll"], 4, 100, ev["train_samples"])
        assert r["paper_nll"] == grid.PAPER_IWAE[r["row"]][0] and r["nll_minus_paper"] == pytest.approx(r["nll"] - r["paper_nll"])
        assert (out / "evals" / f"nll-{r['row']}-p2" / "result.json").exists()  # the shorter run's score is kept
        steps = [x for x in read_log(out / "runs" / f"mnist-{r['row']}") if "loss" in x]
        assert steps[-1]["step"] == 12  # 4 passes of 3 steps, the last two continuing the first two
    table = (out / "table.md").read_text()
    assert "| vae-k1 | ELBO, k-sample mean | 1 | 4 |" in table and f"{saved[1]['nll']:.2f}" in table
    curves = (out / "curves.csv").read_text().splitlines()
    assert curves[0] == "row,pass,val_nll,val_active_units" and len(curves) == 1 + 2 * 4
    with pytest.raises(SystemExit):
        grid.main(["--profile", "mnist", "--rows", "aavae", "--dry_run"])


# ----------------------------------------------------------------------------------------------------
# The AAE's uses with the paper's networks (methods/aae_uses.py --arch mlp)

def uses_args(root, out, method, *extra):
    labelled = ["--labels_per_class", "2"] if "semi" in method else []
    return ["--method", method, "--arch", "mlp", "--dataset", "mnist", "--data_path", root, "--mlp_hidden", "32",
            "--disc_hidden", "16", "--batch_size", "20", "--base_batch", "20", "--lr", "0.01", "--warmup_epochs", "0",
            "--epochs", "2", "--val_size", "0", "--log_every", "1", "--val_every", "1", "--output_dir", str(out),
            *labelled, *extra]


@pytest.mark.parametrize("method,mode", [("semi_aae", "head"), ("cluster_aae", "head"), ("supervised_aae", "grid"),
                                         ("dimred_aae", "map")])
def test_each_use_trains_on_mnist_with_the_papers_networks_resumes_and_is_evaluated(mnist, tmp_path, capsys, method, mode):
    from methods import aae_uses
    aae_uses.main(uses_args(mnist, tmp_path / "straight", method))
    aae_uses.main(uses_args(mnist, tmp_path / "resumed", method, "--max_steps", "4"))
    aae_uses.main(uses_args(mnist, tmp_path / "resumed", method))
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("straight", "resumed"))
    assert a["step"] == b["step"] == 6 and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(x, y) for k in a["extra"]["opts"] for x, y in zip(
        a["extra"]["opts"][k]["state"][0].values(), b["extra"]["opts"][k]["state"][0].values()))
    args = json.loads((tmp_path / "straight" / "args.json").read_text())
    assert args["latent_dim"] == aae_uses.MLP_LATENT[aae_uses.USES[method].kind] and args["amp"] is False
    assert args["gen_lr"] == args["disc_lr"] == pytest.approx(aae_uses.MLP_PHASE_RATIO * 0.01)  # ten times --lr
    model = aae_uses.load_model(str(tmp_path / "straight" / "checkpoint.pt"), "cpu")[0]
    assert sum(isinstance(m, torch.nn.ReLU) for m in model.encoder.modules()) == 2
    assert isinstance(model.image_decoder, aae_uses.MLPDecoder)
    result = aae_uses.main(["evaluate", "--mode", mode, "--checkpoint", str(tmp_path / "straight" / "checkpoint.pt"),
                            "--dataset", "mnist", "--data_path", mnist, "--output_dir", str(tmp_path / "eval"),
                            "--workers", "0"])
    assert result["test_images"] == 20 and result["mode"] == mode
    if mode == "head":  # the style's spread over val, as the model gives it
        x = data.read_mnist(mnist, "val")[0].float() / 255
        with torch.no_grad():
            assert result["z_std"] == pytest.approx(model.infer(x)[1].std(0).mean().item(), rel=1e-3)
    if method == "cluster_aae":
        assert 0 <= result["argmax_rule_top1"] <= 100 and len(result["argmax_rule_labels"]) == 16
        assert result["rule_images"] == 60 and "trained on" in result["rule_bank"]  # no --rule_data: the training split
        elsewhere = ["evaluate", "--mode", mode, "--checkpoint", str(tmp_path / "straight" / "checkpoint.pt"), "--dataset",
                     "mnist", "--data_path", mnist, "--rule_data", str(tmp_path), "--output_dir", str(tmp_path / "e2")]
        assert "held out of its training images" in run_error(elsewhere, capsys, aae_uses.main)


def toy_modes(root):
    """Four digit-like modes, each a bar at its own place, with noise: 400 train and 40 val images as MNIST's files."""
    rng = np.random.default_rng(0)
    os.makedirs(root)
    for split, n in (("train", 400), ("val", 40)):
        labels = np.arange(n) % 4
        images = rng.integers(0, 40, (n, 28, 28))
        for k, y in enumerate(labels):
            images[k, 7 * y:7 * y + 7, :] = 255
        images_file, labels_file = data.MNIST_FILES[split]
        write_idx(os.path.join(root, images_file), images)
        write_idx(os.path.join(root, labels_file), labels)
    return root


def toy_run(root, out, method, *extra):
    from methods import aae_uses
    aae_uses.main(["--method", method, "--arch", "mlp", "--dataset", "mnist", "--data_path", root, "--mlp_hidden", "64",
                   "--disc_hidden", "32", "--batch_size", "40", "--base_batch", "40", "--lr", "0.001", "--warmup_epochs", "0",
                   "--epochs", "50", "--val_every", "50", "--log_every", "10", "--clusters", "4", "--latent_dim", "2",
                   "--output_dir", str(out), *extra])
    return aae_uses.load_model(str(out / "checkpoint.pt"), "cpu")[0]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_modes(str(tmp_path_factory.mktemp("toy") / "modes"))


def test_the_cluster_heads_reach_their_margin_on_a_toy_of_well_separated_modes(toy, tmp_path):
    """dimred's heads, their own step at their own lr, end at least the default margin apart, and the reconstruction
    learns the modes: its error ends below half the mean image's (about 0.2; 0.058 on an AMD EPYC without AVX512,
    under 0.05 on the Intel Xeon the test was written on)."""
    from methods import aae_uses
    model = toy_run(toy, tmp_path / "dimred", "dimred_aae")
    heads = model.heads.detach()
    assert torch.pdist(heads).min() >= 4.0 and aae_uses.head_hinge(heads, 4.0) == 0  # the default margin, reached
    torch.manual_seed(0)
    assert aae_uses.head_hinge(torch.randn(4, 2), 4.0) > 0  # where heads drawn as the model draws them start
    assert [r for r in read_log(tmp_path / "dimred") if "val_recon" in r][-1]["val_recon"] < 0.1


def test_the_clustering_y_spreads_a_toy_of_four_modes_over_its_four_clusters(toy, tmp_path):
    """With the phases and the paper's networks (narrowed), seed 0's y puts each mode in a cluster of its own: the
    categorical prior's adversary and the reconstruction do what the AAE paper says. Not every seed does: seeds 1 and
    2 collapse to fewer clusters (results/small-cpu-30-labels/README.md), the open question of the clustering use."""
    model = toy_run(toy, tmp_path / "cluster", "cluster_aae")
    x, labels = data.read_mnist(toy, "val")
    with torch.no_grad():
        y = model.infer(x.float() / 255)[0].argmax(1)
    assert y.unique().numel() == 4 and all(y[labels == c].unique().numel() == 1 for c in range(4))


def test_the_mnist_profiles_aae_rows_on_a_hold_out_of_train_beside_the_papers_errors(mnist, tmp_path, monkeypatch):
    import contextlib
    import io

    from experiments import grid
    monkeypatch.setattr(grid, "MNIST_AAE", [*grid.MNIST_AAE, "--mlp_hidden", "32", "--disc_hidden", "16", "--batch_size",
                                            "20", "--base_batch", "20"])
    monkeypatch.setattr(grid, "MNIST_RULE_BANK", 10)
    out = tmp_path / "M"
    shutil_val = os.path.join(mnist, "val-images-idx3-ubyte")
    with contextlib.redirect_stdout(io.StringIO()):
        g = grid.main(["--profile", "mnist", "--data_path", mnist, "--output_dir", str(out), "--in_process", "--rows",
                       "semi-100,cluster-16", "--mnist_aae_epochs", "1", "--holdout", "20"])
    held, rule = out / "holdout-data", out / "rule-data"
    paths = [st.cmd[st.cmd.index("--data_path") + 1] for st in g.steps]
    assert paths == [str(held), str(held), str(rule), str(held)]  # MNIST's val never read; cluster-16 trains less the bank
    assert g.steps[3].cmd[g.steps[3].cmd.index("--rule_data") + 1] == str(rule)
    assert data.read_mnist(str(held), "val")[0].shape[0] == 20 and data.read_mnist(str(held), "train")[0].shape[0] == 40
    manifest = json.loads((held / "holdout.json").read_text())
    train = data.read_mnist(mnist, "train")[0]
    torch.testing.assert_close(data.read_mnist(str(held), "val")[0], train[manifest["val"]])
    bank = json.loads((rule / "holdout.json").read_text())["val"]  # the rule's 10 images: of the 40, out of training
    assert data.read_mnist(str(rule), "train")[0].shape[0] == 30
    torch.testing.assert_close(data.read_mnist(str(rule), "val")[0], data.read_mnist(str(held), "train")[0][bank])
    saved = json.loads((out / "results.json").read_text())["aae"]
    assert [r["row"] for r in saved] == ["semi-100", "cluster-16"]
    for r in saved:
        ev = json.loads((out / "evals" / f"head-{r['row']}-e1" / "result.json").read_text())
        assert r["error"] == pytest.approx(100 - ev.get("argmax_rule_top1", ev["top1"])) and r["test_images"] == 20
        assert r["paper_error"] == grid.PAPER_AAE[r["row"]]
    assert saved[0]["what"] == "100 labels" and saved[1]["what"] == "16 clusters" and saved[1]["majority_error"] is not None
    assert saved[1]["rule_images"] == 10 and str(rule) in saved[1]["rule_bank"]
    table_md = (out / "table.md").read_text()
    assert table_md.startswith("# The AAE's uses on MNIST") and "IWAE" not in table_md and os.path.exists(shutil_val)
    with contextlib.redirect_stdout(io.StringIO()):  # the same hold-out again: kept; --pretrain_args ends each pretraining
        g = grid.main(["--profile", "mnist", "--data_path", mnist, "--output_dir", str(out), "--rows", "semi-100,vae-k1",
                       "--holdout", "20", "--dry_run", "--pretrain_args", "--seed 3"])
    assert [st.cmd[-4:-2] for st in g.steps if st.kind == "pretrain"] == [["--seed", "3"]] * 2
    with pytest.raises(SystemExit):  # a hold-out of other images in the same place is refused
        grid.main(["--profile", "mnist", "--data_path", mnist, "--output_dir", str(out), "--rows", "semi-100",
                   "--holdout", "10", "--dry_run"])


def test_the_figures_rows_report_the_label_swap_and_the_heads_against_their_margin(mnist, tmp_path):
    """The supervised and dimred rows have pictures in the paper, no error: their table says what their evaluations
    measured (written here by hand), and results.json carries it."""
    import contextlib
    import io

    from experiments import grid
    out = tmp_path / "M"
    e = grid.MNIST_AAE_EPOCHS
    for row in ("supervised", "dimred"):
        (out / "runs" / f"mnist-{row}").mkdir(parents=True)
        (out / "runs" / f"mnist-{row}" / "args.json").write_text(json.dumps({"epochs": e, "seed": 0}))
    written = {f"grid-supervised-e{e}": {"picture": "grid.png", "test_images": 20, "recon_own_label": 0.0312,
                                          "recon_other_label": 0.0587},
               f"map-dimred-e{e}": {"picture": "map.png", "test_images": 20, "top1": 61.25, "head_margin": 4.0,
                                    "head_min_distance": 3.5, "head_pairs_within_margin": 2, "head_pairs": 45}}
    for name, result in written.items():
        (out / "evals" / name).mkdir(parents=True)
        (out / "evals" / name / "result.json").write_text(json.dumps(result))
    with contextlib.redirect_stdout(io.StringIO()):
        grid.main(["--profile", "mnist", "--data_path", mnist, "--output_dir", str(out), "--rows", "supervised,dimred",
                   "--report_only"])
    sup, dim = json.loads((out / "results.json").read_text())["aae"]
    assert (sup["row"], sup["mode"], sup["error"], sup["recon_other_label"]) == ("supervised", "grid", None, 0.0587)
    assert dim["map_knn_error"] == pytest.approx(38.75) and dim["head_pairs_within_margin"] == 2
    table_md = (out / "table.md").read_text()
    assert f"| supervised | {e} | grid.png | reconstruction error 0.0312 with each image's own label, 0.0587 " in table_md
    assert "error in the map 38.75 %; heads' smallest distance 3.50 (margin 4.00), 2 of 45 pairs within it |" in table_md


def test_the_aae_settings_choice_takes_the_lowest_mean_error_among_finite_runs(tmp_path):
    """experiments/report.py's mnist_aae_choice: semi-100's and cluster-16's errors averaged per setting; a setting whose
    training loss went non-finite is out, even with the lowest mean; one missing its results has no score."""
    from experiments import grid, report
    errors = {"lr0.001": (3.0, 20.0), "lr0.0003": (4.0, 12.0), "lr0.003": (1.0, 5.0)}  # w500: never ran
    for name, (semi, cluster) in errors.items():
        os.makedirs(tmp_path / name)
        rows = [{"row": "semi-100", "error": semi}, {"row": "cluster-16", "error": cluster}]
        (tmp_path / name / "results.json").write_text(json.dumps({"rows": [], "aae": rows}))
        for row in ("semi-100", "cluster-16"):
            run = tmp_path / name / "runs" / f"mnist-{row}"
            os.makedirs(run)
            loss = "NaN" if name == "lr0.003" and row == "cluster-16" else "0.5"
            (run / "log.jsonl").write_text(f'{{"step": 1, "loss": 0.9}}\n{{"step": 2, "loss": {loss}}}\n')
    scores, winner = report.mnist_aae_choice(str(tmp_path))
    assert set(scores) == set(grid.MNIST_AAE_CHOICE) and scores["w500"] is None and scores["lr0.003"] is None
    assert scores["lr0.001"] == 11.5 and scores["lr0.0003"] == 8.0 and winner == "lr0.0003"
