"""End-to-end pretraining runs on a generated image folder (CPU, seconds each)."""
import contextlib
import json
import math
import os

import pytest
import torch
import torchvision
from PIL import Image

import aavae
from util import rundir
from util.misc import native_bf16
from conftest import MINI, MONITOR, NO_MINI, SIZE, read_log, tiny_args


def tensors_of(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return {**{"model." + k: v for k, v in ckpt["model"].items()}, **{
        f"opt.{k}.{n}": v for k, s in ckpt["optimizer"]["state"].items() for n, v in s.items()}}


@pytest.mark.parametrize("method", ["ae", "aaae", "vae", "aavae"])
def test_each_method_trains_and_writes_its_outputs(folder, tmp_path, method, monkeypatch):
    out = tmp_path / method
    monkeypatch.setattr(aavae, "peak_tflops", lambda device: 0.5)  # as if on an accelerator of known peak
    metrics = aavae.main(tiny_args(folder, out, "--method", method, "--max_steps", "3", *MONITOR))
    rows = [r for r in read_log(out) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["img_per_s"] > 0 for r in rows)
    # ResNet-18 + decoder18 at 16 px: 1.165 GFLOP per image and step (4.64 at 32 px)
    assert all(r["tflop_per_s"] * 1e12 / r["img_per_s"] == pytest.approx(1.165e9, rel=0.01) for r in rows)
    assert all(r["mfu"] == pytest.approx(r["tflop_per_s"] / 0.5) for r in rows)
    variational = method in ("vae", "aavae")
    assert ("kl" in rows[0]) == variational
    assert ("val_bpd" in metrics) == ("val_latent_snr" in metrics) == variational and metrics["val_images"] == 8
    assert 0 <= metrics["val_active_units"] <= 128
    validation = [r for r in read_log(out) if "val_recon" in r]
    assert len(validation) == 1 and 0 <= validation[0]["val_linear_top1"] <= 100 and 0 <= validation[0]["val_knn_top1"] <= 100
    assert sorted(os.listdir(out)) == ["args.json", "checkpoint.pt", "encoder.pth", "log.jsonl", "recon_0000003.png"]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 3 and ckpt["args"]["method"] == method
    # encoder.pth is a torchvision ResNet state dict (CIFAR stem, no classifier)
    net = torchvision.models.resnet18()
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.fc = torch.nn.Identity()
    net.load_state_dict(torch.load(out / "encoder.pth", weights_only=True))
    with Image.open(out / "recon_0000003.png") as picture:
        assert picture.height > 4 * SIZE  # four rows of images


def test_rerunning_the_command_resumes_and_continues_the_step_count(folder, tmp_path):
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "2"))
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "4"))
    assert [r["step"] for r in read_log(tmp_path) if "loss" in r] == [1, 2, 3, 4]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 4


@pytest.mark.parametrize("memory", ["--in_memory", "--no-in_memory"])
def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(folder, tmp_path, memory):
    # 24 training images, batch 8: 3 steps per epoch, so the split at step 4 falls inside epoch 2. The monitor
    # runs in the uninterrupted run alone: its probes at each validation leave the training untouched.
    aavae.main(tiny_args(folder, tmp_path / "straight", memory, "--max_steps", "6", *MONITOR))
    aavae.main(tiny_args(folder, tmp_path / "resumed", memory, "--max_steps", "4"))
    aavae.main(tiny_args(folder, tmp_path / "resumed", memory, "--max_steps", "6"))
    a, b = tensors_of(tmp_path / "straight" / "checkpoint.pt"), tensors_of(tmp_path / "resumed" / "checkpoint.pt")
    assert a.keys() == b.keys() and len(a) > 100
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_decoder_target_in_the_training_loop_is_the_stored_original(folder, tmp_path, monkeypatch):
    seen = []
    real = aavae.training_loss

    def spy(model, x, x_aug, *a, **k):
        if not x.is_meta:  # the FLOP count at start runs the loss on meta tensors
            seen.append((x.clone(), x_aug.clone()))
        return real(model, x, x_aug, *a, **k)

    monkeypatch.setattr(aavae, "training_loss", spy)
    aavae.main(tiny_args(folder, tmp_path, "--method", "aavae", "--max_steps", "2"))
    assert len(seen) == 2
    args = aavae.validate(aavae.get_args_parser().parse_args(tiny_args(folder, tmp_path)))
    train, _, spec = aavae.load_data(args, torch.device("cpu"))
    originals = aavae.normalize(train.images.float() / 255, spec).flatten(1)
    for x, x_aug in seen:
        dist_x = torch.cdist(x.flatten(1), originals).min(1).values
        dist_aug = torch.cdist(x_aug.flatten(1), originals).min(1).values
        assert dist_x.max() < 1e-3, "every decoder target is one of the stored originals"
        assert dist_aug.min() > 1.0, "every encoder input is an augmented view, none of the originals"


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(folder, tmp_path, monkeypatch, capsys):
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "3", "--save_every", "1"))
    before = (tmp_path / "checkpoint.pt").read_bytes()
    real, calls = aavae.compute_loss, []

    def poisoned(*a, **k):
        calls.extend([] if a[0].is_meta else [1])  # the FLOP count at start runs the loss on meta tensors
        loss, parts = real(*a, **k)
        return (loss * float("nan") if len(calls) == 2 else loss), parts

    monkeypatch.setattr(aavae, "compute_loss", poisoned)
    with pytest.raises(SystemExit) as e:
        aavae.main(tiny_args(folder, tmp_path, "--max_steps", "9", "--save_every", "1", "--log_every", "5"))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "non-finite at step 4" in err and "last good state" in err
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_boolean_flags_parse_both_ways():
    parse = aavae.get_args_parser().parse_args
    assert parse(["--learn_scale"]).learn_scale is True
    assert parse(["--no-learn_scale"]).learn_scale is False
    assert parse([]).learn_scale is False and parse([]).blur is None
    assert parse(["--no-blur"]).blur is False and parse(["--sync_bn"]).sync_bn is True
    with pytest.raises(SystemExit):
        parse(["--learn_scale", "False"])  # the type=bool trap: a value is refused, not read as True


def test_lr_is_scaled_with_the_global_batch(folder, tmp_path):
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "1", "--warmup_epochs", "0", "--lr", "0.001"))
    assert read_log(tmp_path)[0]["lr"] == pytest.approx(0.001 * 8 / 256)


def run_error(argv, capsys, main=aavae.main):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code != 0
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_bad_input_gets_one_sentence_and_a_non_zero_exit(folder, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    assert "does not exist" in run_error(tiny_args(str(tmp_path / "nowhere"), tmp_path / "o1"), capsys)
    assert "ImageFolder" in run_error(tiny_args(str(empty), tmp_path / "o2"), capsys)
    assert "deterministic latent" in run_error(tiny_args(folder, tmp_path / "o3", "--method", "ae", "--beta", "1"), capsys)
    assert "--beta must be >= 0" in run_error(tiny_args(folder, tmp_path / "o4", "--beta", "-1"), capsys)
    assert "--latent_dim must be positive" in run_error(tiny_args(folder, tmp_path / "o5", "--latent_dim", "0"), capsys)
    assert "invalid choice" in run_error(tiny_args(folder, tmp_path / "o6", "--method", "gan"), capsys)
    assert "fewer than one global batch" in run_error(tiny_args(folder, tmp_path / "o7", "--batch_size", "64"), capsys)


def test_loss_falls_over_a_short_aavae_run(folder, tmp_path):
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "24", "--log_every", "6", "--warmup_epochs", "0", "--lr", "0.03"))
    const = 0.5 * math.log(2 * math.pi) * 3 * SIZE * SIZE  # the part of -log p(x|z) no decoder can remove
    losses = [r["loss"] - const for r in read_log(tmp_path) if "loss" in r]
    assert len(losses) == 4 and losses[-1] < 0.9 * losses[0], losses


@pytest.mark.skipif(not os.path.isdir(MINI), reason=NO_MINI)
def test_real_cifar10_images_train(tmp_path):
    aavae.main(tiny_args(MINI, tmp_path, "--max_steps", "2", "--workers", "2", "--monitor_images", "100"))
    assert json.loads((tmp_path / "args.json").read_text())["stem"] == "cifar"
    assert [r["step"] for r in read_log(tmp_path) if "loss" in r] == [1, 2]


def test_args_json_records_provenance_which_a_resume_does_not_compare(folder, tmp_path):
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "1"))
    record = json.loads((tmp_path / "args.json").read_text())
    prov = record["provenance"]
    assert prov["torch"] == torch.__version__ and prov["torchvision"] == torchvision.__version__
    assert prov["git_commit"] is None or len(prov["git_commit"]) == 40
    assert prov["git_dirty"] in (True, False, None)
    assert record["image_size"] == SIZE and record["stem"] == "cifar" and record["amp"] == native_bf16()  # defaults resolved
    record["provenance"] = {**prov, "git_commit": "0" * 40, "torch": "0.0"}  # another commit and torch
    (tmp_path / "args.json").write_text(json.dumps(record))
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "2"))
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 2


def test_target_augmented_reconstructs_the_view_as_the_authors_baseline_did(folder, tmp_path, monkeypatch):
    seen = []
    real = aavae.training_loss

    def spy(model, x, x_aug, *a, **k):
        if not x.is_meta:
            seen.append(torch.equal(x, x_aug))
        return real(model, x, x_aug, *a, **k)

    monkeypatch.setattr(aavae, "training_loss", spy)
    aavae.main(tiny_args(folder, tmp_path / "authors", "--method", "aaae", "--target", "augmented", "--max_steps", "2"))
    aavae.main(tiny_args(folder, tmp_path / "ours", "--method", "aaae", "--max_steps", "2"))
    assert seen == [True, True, False, False]


def test_target_augmented_needs_an_augmented_method(folder, tmp_path, capsys):
    assert "needs an augmented view" in run_error(tiny_args(folder, tmp_path, "--method", "ae", "--target", "augmented"), capsys)


def test_bf16_autocast_is_the_default_only_where_it_is_native(monkeypatch):
    from util import misc
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(misc.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(misc.torch.cpu, "get_capabilities", lambda: {"avx512_bf16": False, "amx_bf16": False}, raising=False)
    assert misc.native_bf16() is False  # emulated bf16 would be slower than fp32
    monkeypatch.setattr(misc.torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True}, raising=False)
    assert misc.native_bf16() is True
    parse = lambda *a: aavae.resolve_amp(aavae.validate(aavae.get_args_parser().parse_args(list(a))))
    assert parse().amp is True and parse("--no-amp").amp is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN kept below its bf16 instructions: emulated again
    assert misc.native_bf16() is False and parse().amp is False


def test_a_resumed_run_keeps_the_precision_it_began_with_unless_told_otherwise(folder, tmp_path, monkeypatch, capsys):
    precision, real = [], aavae.train_step
    monkeypatch.setattr(aavae, "train_step", lambda *a: precision.append(a[6] is not contextlib.nullcontext) or real(*a))
    monkeypatch.setattr(rundir, "native_bf16", lambda: False)  # begun on a CPU without native bf16: fp32
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "1"))
    monkeypatch.setattr(rundir, "native_bf16", lambda: True)  # resumed on one with it
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "2"))
    assert "fp32 as the run began" in capsys.readouterr().out
    assert json.loads((tmp_path / "args.json").read_text())["amp"] is False
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "3", "--amp"))  # asked for: bf16 from here on
    assert precision == [False, False, True] and json.loads((tmp_path / "args.json").read_text())["amp"] is True


def test_the_latent_snr_is_the_spread_of_mu_over_the_posterior_noise(folder, tmp_path, monkeypatch):
    """val_latent_snr = sum_d Var_x(mu_d) / sum_d E_x[sigma_d^2]: the same weights scored with every log_var
    lowered by 2 (sigma^2 / e^2, mu unchanged) give e^2 times the ratio and the same active units."""
    plain = aavae.main(tiny_args(folder, tmp_path / "plain", "--method", "vae", "--max_steps", "1"))
    evaluate = aavae.evaluate

    def lowered(model, *args):
        encode = model.encode
        model.encode = lambda x: (lambda mu, log_var: (mu, log_var - 2))(*encode(x))
        try:
            return evaluate(model, *args)
        finally:
            del model.encode

    monkeypatch.setattr(aavae, "evaluate", lowered)
    shifted = aavae.main(tiny_args(folder, tmp_path / "lowered", "--method", "vae", "--max_steps", "1"))
    assert plain["val_latent_snr"] > 0
    assert shifted["val_latent_snr"] / plain["val_latent_snr"] == pytest.approx(math.exp(2), rel=1e-4)
    assert shifted["val_active_units"] == plain["val_active_units"]


def test_a_compiled_run_trains_and_resumes(folder, tmp_path, monkeypatch, capsys):
    # aot_eager: dynamo's capture and AOT autograd's forward and backward graphs, as --compile makes them, without
    # inductor's code generation (minutes for this model on a CPU; test_cuda.py compiles with it on a GPU)
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **k: real(model, backend="aot_eager", **k))
    torch._dynamo.reset()
    aavae.main(tiny_args(folder, tmp_path, "--compile", "--max_steps", "2"))
    aavae.main(tiny_args(folder, tmp_path, "--compile", "--max_steps", "3"))
    assert "resuming from step 2" in capsys.readouterr().out
    rows = [r for r in read_log(tmp_path) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in rows)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    assert not any(k.startswith("_orig_mod") for k in state)  # the plain module's state, loadable without compile
