"""Architecture (Appendix A.1) and loss (Section 3, Eqs. 1-3)."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

import aavae
from conftest import setup_run


@pytest.mark.parametrize("stem, size", [("cifar", 32), ("stl", 96), ("imagenet", 224)])
@pytest.mark.parametrize("encoder", ["resnet18", "resnet34", "resnet50"])
def test_encoder_gives_pooled_features_for_each_stem(encoder, stem, size):
    net = aavae.build_encoder(encoder, stem)
    assert (net.conv1.kernel_size, net.conv1.stride) == (((3, 3), (1, 1)) if stem == "cifar" else ((7, 7), (2, 2)))
    assert isinstance(net.maxpool, torch.nn.MaxPool2d) == (stem == "imagenet")
    assert net(torch.randn(2, 3, size, size)).shape == (2, aavae.FEATURE_DIM[encoder])


@pytest.mark.parametrize("stem, size", [("cifar", 32), ("stl", 96), ("imagenet", 224)])
@pytest.mark.parametrize("decoder", ["decoder18", "decoder34", "decoder50"])
def test_decoder_returns_an_image_of_the_input_size(decoder, stem, size):
    dec = aavae.Decoder(decoder, 64, size, stem, 512)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in dec.modules())
    with torch.no_grad():
        assert dec(torch.randn(1, 64)).shape == (1, 3, size, size)


def test_decoder_stage_sizes_follow_the_stem():
    # stage 1 resizes to input / f: f = 8 (cifar), 16 (stride-2 stem), 32 (stride-2 stem + maxpool)
    for stem, size, first in [("cifar", 32, 4), ("stl", 96, 6), ("imagenet", 224, 7)]:
        dec = aavae.Decoder("decoder18", 8, size, stem, 512)
        assert dec.stages[0][0].upsample.size == first
    blocks = [len(s) for s in aavae.Decoder("decoder50", 8, 32, "cifar", 2048).stages]
    assert blocks == [3, 6, 4, 3]


@pytest.mark.parametrize("encoder, decoder", [("resnet50", "decoder18"), ("resnet50", "decoder34"),
                                              ("resnet50", "decoder50"), ("resnet18", "decoder50")])
def test_decoder_width_follows_the_encoder_features_not_the_decoder_depth(encoder, decoder):
    # Fig. 4c swaps the decoder behind a fixed ResNet-50: its MLP and first conv start from 2048 whatever it is
    model = aavae.AutoEncoder(encoder, decoder, "cifar", 16, 32, variational=True)
    h = aavae.FEATURE_DIM[encoder]
    assert model.decoder.mlp[0].out_features == model.decoder.mlp[2].out_features == h
    assert model.decoder.conv_in[0].in_channels == h // 16 and model.decoder.conv_in[0].out_channels == h
    with torch.no_grad():
        assert model.decoder(torch.randn(2, 16)).shape == (2, 3, 32, 32)


def test_projection_heads():
    vae = aavae.ProjectionHead(512, 128, variational=True)
    ae = aavae.ProjectionHead(512, 128, variational=False)
    assert vae.mu.bias is None and vae.log_var.bias is None and ae.log_var is None
    mu, log_var = vae(torch.randn(4, 512))
    assert mu.shape == log_var.shape == (4, 128)


def test_likelihood_and_kl_agree_with_torch_distributions():
    torch.manual_seed(0)
    x, x_hat = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    for log_scale in (-3.0, 0.0, 1.5):
        ref = Normal(x_hat, math.exp(log_scale / 2)).log_prob(x).flatten(1).sum(1)  # log_scale is a log-variance
        torch.testing.assert_close(aavae.gaussian_log_likelihood(x_hat, x, torch.tensor(log_scale)), ref)
    mu, log_var = torch.randn(5, 16), torch.randn(5, 16)
    ref = kl_divergence(Normal(mu, torch.exp(0.5 * log_var)), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(aavae.kl_divergence(mu, log_var), ref)
    z = torch.randn(5, 16)
    torch.testing.assert_close(aavae.log_normal(z, mu, log_var), Normal(mu, torch.exp(0.5 * log_var)).log_prob(z).sum(1))


def small_model(variational=True):
    torch.manual_seed(0)
    return aavae.AutoEncoder("resnet18", "decoder18", "cifar", 16, 32, variational)


def grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_beta_zero_gives_the_kl_no_gradient():
    model = small_model()
    x = torch.randn(4, 3, 32, 32)
    eps = torch.randn(4, 16)
    loss0, parts = aavae.training_loss(model, x, x, eps, aavae.METHODS["aavae"], beta=0.0)
    g0 = grads(model, loss0)
    assert parts["kl"] > 0, "the KL is still measured and logged"
    recon_only = -aavae.gaussian_log_likelihood(model(x, eps)[0], x, model.log_scale).mean()
    g_recon = grads(model, recon_only)
    assert g0.keys() == g_recon.keys()
    for n in g0:
        assert torch.equal(g0[n], g_recon[n]), n
    g1 = grads(model, aavae.training_loss(model, x, x, eps, aavae.METHODS["aavae"], beta=1.0)[0])
    assert not torch.equal(g1["projection.log_var.weight"], g0["projection.log_var.weight"])


def test_decoder_target_is_the_original_not_the_augmented_view():
    model = small_model().eval()
    x, x_aug = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    eps = torch.zeros(2, 16)
    loss, _ = aavae.training_loss(model, x, x_aug, eps, aavae.METHODS["aavae"], beta=0.0)
    x_hat = model.decoder(model.encode(x_aug)[0])
    assert torch.allclose(loss, -aavae.gaussian_log_likelihood(x_hat, x, torch.tensor(0.0)).mean())
    assert not torch.allclose(loss, -aavae.gaussian_log_likelihood(x_hat, x_aug, torch.tensor(0.0)).mean())


def test_ae_family_uses_mse_and_a_deterministic_latent():
    model = small_model(variational=False).eval()
    x = torch.randn(2, 3, 32, 32)
    a, b = model(x, torch.randn(2, 16)), model(x, torch.randn(2, 16))
    assert torch.equal(a[0], b[0]) and a[2] is None
    loss, parts = aavae.training_loss(model, x, x, None, aavae.METHODS["ae"], beta=0.0)
    torch.testing.assert_close(loss, ((a[0] - x) ** 2).mean())
    assert "kl" not in parts


def test_log_var_and_log_scale_are_clamped():
    mu, log_var = torch.zeros(1, 4), torch.full((1, 4), 1e4)
    assert torch.isfinite(aavae.kl_divergence(mu, log_var.clamp(*aavae.LOG_VAR_RANGE))).all()
    x = torch.zeros(1, 3, 4, 4)
    assert torch.isfinite(aavae.gaussian_log_likelihood(x + 1, x, torch.tensor(-1e4))).all()
    model = small_model()
    with torch.no_grad():
        model.projection.log_var.weight.fill_(1e3)
        _, log_var = model.encode(torch.randn(2, 3, 32, 32))
    assert log_var.max() <= aavae.LOG_VAR_RANGE[1]


def test_lr_schedule_warms_up_from_above_zero_then_holds_or_decays():
    lr = lambda s, kind: aavae.get_lr(s, 100, 10, 1.0, kind)
    assert 0 < lr(0, "constant") == pytest.approx(0.1) and lr(9, "constant") == 1.0
    assert lr(50, "constant") == lr(99, "constant") == 1.0
    assert lr(10, "cosine") == 1.0 and lr(99, "cosine") < 0.01 and lr(55, "linear") == pytest.approx(0.5)


def test_step_flops_are_the_papers_model_costs():
    # ResNet-50 + decoder50, forward and backward: 10.8 / 24.4 / 38.0 GFLOP per image at 32 / 96 / 224 px
    for size, stem, gflop in ((32, "cifar", 10.8), (96, "stl", 24.4), (224, "imagenet", 38.0)):
        args = aavae.validate(aavae.get_args_parser().parse_args([]))
        args.stem = stem
        spec = aavae.AugmentSpec(size, 1.0, True, (0.5,) * 3, (0.5,) * 3)
        assert aavae.step_flops(args, spec) / 1e9 == pytest.approx(gflop, rel=0.01)
    # IWAE decodes k samples; the AAE's generator phase runs the encoder again
    r18 = lambda *a: setup_run(["--encoder", "resnet18", "--stem", "cifar", *a])
    flops = lambda *a: r18(*a)[1].flops(r18(*a)[0], spec)
    spec = aavae.AugmentSpec(32, 0.5, False, (0.5,) * 3, (0.5,) * 3)
    base = flops()
    iwae = [flops("--method", "iwae", "--iw_samples", str(k)) for k in (1, 2, 3)]
    assert iwae[0] == pytest.approx(base, rel=1e-3) and iwae[2] - iwae[0] == pytest.approx(2 * (iwae[1] - iwae[0]))
    ae = flops("--method", "ae")
    assert flops("--method", "aae") == ae  # its encoder loss joins the same backward


@pytest.mark.parametrize("method", ["ae", "aavae", "iwae"])  # a deterministic latent, a Gaussian one, k samples
def test_the_models_forward_compiles_as_one_graph(method):
    # fullgraph=True makes a graph break an error; the eager backend checks dynamo's capture without code
    # generation (seconds). The compiled training step itself: test_train.py and, with inductor, test_cuda.py.
    variational, samples = method != "ae", (3,) if method == "iwae" else ()
    model = aavae.AutoEncoder("resnet18", "decoder18", "cifar", 16, 8, variational).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    eps = torch.randn(samples + (2, 16)) if variational else None
    torch._dynamo.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as training runs it, by default on a GPU
        x_hat = torch.compile(model, fullgraph=True, backend="eager")(x, eps)[0]
    assert x_hat.shape == samples + (2, 3, 8, 8)


def test_mfu_is_reported_against_the_peak_of_the_exact_part_and_never_guessed(monkeypatch):
    from util import misc
    cuda = torch.device("cuda", 0)
    for name, peak in [("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835),
                       ("NVIDIA H200", 989), ("NVIDIA H200 NVL", 835), ("NVIDIA A100-SXM4-80GB", 312),
                       ("NVIDIA GeForce RTX 4090", None), ("NVIDIA H100 SXM5 96GB", None)]:
        monkeypatch.setattr(misc.torch.cuda, "get_device_name", lambda device, name=name: name)
        assert misc.peak_tflops(cuda) == peak, name
    assert misc.peak_tflops(torch.device("cpu")) is None


def test_saved_files_hold_cpu_tensors_in_the_same_containers():
    from util import misc
    state = {"model": {"w": torch.ones(2, requires_grad=True)}, "opt": [(torch.zeros(1), 3)], "step": 7}
    out = misc.on_cpu(state)
    assert out["step"] == 7 and isinstance(out["opt"], list) and isinstance(out["opt"][0], tuple)
    assert all(t.device.type == "cpu" and not t.requires_grad for t in (out["model"]["w"], out["opt"][0][0]))
    assert torch.equal(out["model"]["w"], state["model"]["w"])


def test_ddp_keeps_its_gradients_in_the_buckets_and_knows_the_graph_is_static(tmp_path):
    import torch.distributed as dist
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        ddp = aavae.wrap_ddp(torch.nn.Linear(4, 2), torch.device("cpu"))
        assert ddp.gradient_as_bucket_view and ddp.static_graph
        assert not aavae.wrap_ddp(torch.nn.Linear(4, 2), torch.device("cpu"), static_graph=False).static_graph
    finally:
        dist.destroy_process_group()
