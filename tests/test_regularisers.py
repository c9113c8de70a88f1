"""IWAE and the adversarial autoencoder (Burda et al. 2016; Makhzani et al. 2016), plain and augmentation-augmented."""
import contextlib
import math

import pytest
import torch
from torch.distributions import Normal

import aavae
from methods import aae, iwae
from util import data
from conftest import COMMANDS, read_log, setup_run, tiny_args
from test_train import run_error, tensors_of
from util.misc import generator


def toy(n=3, latent=4, seed=0):
    """A fixed decoder (a random linear map) and a posterior, to evaluate bounds without training."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(latent, 3 * 2 * 2, generator=g)
    decode = lambda z: (z @ weight).unflatten(-1, (3, 2, 2))
    x = torch.randn(n, 3, 2, 2, generator=g)
    mu, log_var = torch.randn(n, latent, generator=g) * 0.5, torch.randn(n, latent, generator=g) * 0.3 - 1
    return decode, x, mu, log_var, torch.tensor(0.0)


def bound(k, draws, seed=1):
    """E[L_k] over `draws` independent sets of k samples, per image."""
    decode, x, mu, log_var, log_scale = toy()
    eps = torch.randn(draws, k, *mu.shape, generator=torch.Generator().manual_seed(seed))
    z = aavae.reparameterize(mu, log_var, eps)
    return aavae.iwae_bound(aavae.log_weight(x, decode(z), z, mu, log_var, log_scale).transpose(0, 1)).mean(0)


def test_one_sample_bound_is_the_elbo():
    decode, x, mu, log_var, log_scale = toy()
    eps = torch.randn(1, *mu.shape)
    z = aavae.reparameterize(mu, log_var, eps)
    std = torch.exp(0.5 * log_var)
    ref = (Normal(decode(z[0]), 1.0).log_prob(x).flatten(1).sum(1) + Normal(0.0, 1.0).log_prob(z[0]).sum(1)
           - Normal(mu, std).log_prob(z[0]).sum(1))
    torch.testing.assert_close(aavae.iwae_bound(aavae.log_weight(x, decode(z), z, mu, log_var, log_scale)), ref)
    # in expectation: E[log p(x|z)] - KL(q || p), the KL in closed form
    elbo = bound(1, 20000)
    eps = torch.randn(20000, *mu.shape, generator=torch.Generator().manual_seed(1))
    recon = aavae.gaussian_log_likelihood(decode(aavae.reparameterize(mu, log_var, eps)), x, log_scale).mean(0)
    torch.testing.assert_close(elbo, recon - aavae.kl_divergence(mu, log_var), atol=0.05, rtol=0)


def test_the_bound_tightens_as_k_grows():
    l1, l5, l50 = bound(1, 4000), bound(5, 4000), bound(50, 4000)
    assert (l1 < l5).all() and (l5 < l50).all(), (l1, l5, l50)


def test_iwae_training_loss_is_minus_the_k_sample_bound():
    torch.manual_seed(0)
    model = aavae.AutoEncoder("resnet18", "decoder18", "cifar", 8, 32, variational=True).eval()
    x = torch.randn(2, 3, 32, 32)
    eps = torch.randn(4, 2, 8)
    loss, parts = iwae.training_loss(model, x, x, eps)
    mu, log_var = model.encode(x)
    z = aavae.reparameterize(mu, log_var, eps)
    x_hat = torch.stack([model.decoder(zi) for zi in z])  # one sample at a time, as an independent check
    ref = -aavae.iwae_bound(aavae.log_weight(x, x_hat, z, mu, log_var, model.log_scale)).mean()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("method", ["iwae", "aa_iwae", "aae", "aa_aae"])
def test_each_regulariser_trains_with_the_diagnostics(folder, tmp_path, method):
    extra = ["--iw_samples", "3"] if "iwae" in method else []
    metrics = COMMANDS[method].main(tiny_args(folder, tmp_path, "--method", method, "--max_steps", "2", *extra))
    rows = [r for r in read_log(tmp_path) if "loss" in r]
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
    assert ("disc_loss" in rows[0]) == ("aae" in method)
    assert ("val_bpd" in metrics) == ("iwae" in method)
    assert {"val_active_units", "val_sim_same", "val_sim_diff"} <= set(metrics)
    if "aae" in method:
        ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
        assert set(ckpt["extra"]) == {"disc", "disc_opt"} and ckpt["extra"]["disc_opt"]["state"]


def test_aae_resumes_bit_identically_with_its_discriminator(folder, tmp_path):
    run = lambda out, steps: aae.main(tiny_args(folder, tmp_path / out, "--method", "aa_aae", "--max_steps", steps))
    run("straight", "5"), run("resumed", "2"), run("resumed", "5")
    ckpts = [torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("straight", "resumed")]
    a, b = tensors_of(tmp_path / "straight" / "checkpoint.pt"), tensors_of(tmp_path / "resumed" / "checkpoint.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    for part in ("disc",):
        for k, v in ckpts[0]["extra"][part].items():
            assert torch.equal(v, ckpts[1]["extra"][part][k]), k


def test_an_aae_checkpoint_that_keeps_its_discriminator_under_the_former_key_resumes(folder, tmp_path):
    run = lambda out, steps: aae.main(tiny_args(folder, tmp_path / out, "--method", "aae", "--max_steps", steps))
    run("straight", "2"), run("old", "1")
    ckpt = torch.load(tmp_path / "old" / "checkpoint.pt", weights_only=True)
    ckpt["adversary"] = ckpt.pop("extra")  # as checkpoints were written before the layout's change
    torch.save(ckpt, tmp_path / "old" / "checkpoint.pt")
    run("old", "2")
    a, b = tensors_of(tmp_path / "straight" / "checkpoint.pt"), tensors_of(tmp_path / "old" / "checkpoint.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_iwae_resumes_bit_identically(folder, tmp_path):
    run = lambda out, steps: iwae.main(tiny_args(folder, tmp_path / out, "--method", "aa_iwae", "--iw_samples", "2",
                                                 "--max_steps", steps))
    run("straight", "5"), run("resumed", "2"), run("resumed", "5")
    a, b = tensors_of(tmp_path / "straight" / "checkpoint.pt"), tensors_of(tmp_path / "resumed" / "checkpoint.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_log(tmp_path / "resumed") if "loss" in r] == [1, 2, 3, 4, 5]


def aae_update(folder, tmp_path, weight, optimizer="adam"):
    """The change of every encoder parameter in one AA-AAE training step with --adv_weight weight, from the
    same initial weights, batch and random draws."""
    args = setup_run(tiny_args(folder, tmp_path, "--method", "aa_aae", "--adv_weight", str(weight)))[0]
    train, _, spec = aavae.load_data(args, torch.device("cpu"))
    model, adam, adversary = aae.build(args, spec, torch.device("cpu"), 1)
    opt = adam if optimizer == "adam" else torch.optim.SGD(model.parameters(), lr=1.0)
    batch = next(data.TrainBatches(train, 8, 0, 1, 1, 0)(0, ("crops", 0, 0)))
    before = [p.detach().clone() for p in model.encoder.parameters()]
    aae.step(model, opt, batch, spec, generator("cpu", "step", 0, 0, 0), args, contextlib.nullcontext, adversary)
    return torch.cat([(p.detach() - b).flatten() for p, b in zip(model.encoder.parameters(), before)])


def test_adversarial_weight_scales_the_encoders_share_of_the_update(folder, tmp_path):
    # With SGD the update is the gradient: reconstruction + weight x fool-the-discriminator, linear in the weight.
    d0, d1, d2 = (aae_update(folder, tmp_path / f"sgd{w}", w, "sgd") for w in (0, 1, 2))
    adversarial = d1 - d0
    assert adversarial.norm() > 1e-3 * d0.norm()
    torch.testing.assert_close(d2 - d1, adversarial, rtol=1e-3, atol=1e-6)
    # With the run's own Adam, doubling the weight changes the step (a separate Adam on the weighted loss would not).
    a1, a2 = aae_update(folder, tmp_path / "adam1", 1), aae_update(folder, tmp_path / "adam2", 2)
    assert (a1 - a2).norm() > 0.01 * a1.norm()


def test_regulariser_flags_belong_to_their_methods(folder, tmp_path, capsys):
    err = lambda *a: run_error(tiny_args(folder, tmp_path, *a), capsys, COMMANDS[a[1]].main)
    assert "no place in the IWAE bound" in err("--method", "iwae", "--beta", "1")
    assert "unrecognized arguments: --iw_samples 4" in err("--method", "vae", "--iw_samples", "4")
    assert "unrecognized arguments: --adv_weight 2" in err("--method", "aavae", "--adv_weight", "2")
    assert "deterministic latent" in err("--method", "aae", "--learn_scale")
    assert "--iw_samples must be >= 1, got 0" in err("--method", "iwae", "--iw_samples", "0")
    assert "--disc_hidden must be >= 1, got 0" in err("--method", "aa_aae", "--disc_hidden", "0")
