"""linear_eval.py: a probe that cannot lie (Appendix A.1; the README's differences from the authors' code)."""
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

import torchvision.transforms.v2.functional as TF

import aavae
import linear_eval
from conftest import SIZE, tiny_args
from test_train import run_error


def probe_args(data, out, *extra):
    return ["--dataset", "folder", "--data_path", data, "--batch_size", "8", "--workers", "0",
            "--output_dir", str(out), *extra]


@pytest.fixture(scope="module")
def pretrained(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrained")
    aavae.main(tiny_args(folder, out, "--max_steps", "2"))
    return out


def colour_folder(root, train=16, val=7):
    """Two classes a linear probe can always tell apart: reddish and bluish images. val = 7 per class,
    so the 14 test images divide neither by the batch nor by two processes' batches."""
    rng = np.random.default_rng(1)
    for split, n in (("train", train), ("val", val)):
        for c in range(2):
            os.makedirs(os.path.join(root, split, f"c{c}"), exist_ok=True)
            for k in range(n):
                img = rng.integers(0, 90, (SIZE, SIZE, 3), dtype=np.uint8)
                img[..., 0 if c == 0 else 2] += 160
                Image.fromarray(img).save(os.path.join(root, split, f"c{c}", f"{k}.png"))
    return str(root)


@pytest.mark.parametrize("name", ["checkpoint.pt", "encoder.pth"])
def test_a_checkpoint_from_aavae_loads_and_is_probed(pretrained, folder, tmp_path, name):
    result = linear_eval.main(probe_args(folder, tmp_path, "--checkpoint", str(pretrained / name), "--epochs", "1"))
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved == result and saved["mode"] == "linear" and saved["checkpoint"].endswith(name)
    assert saved["provenance"]["torch"] == torch.__version__
    assert saved["encoder"] == "resnet18" and saved["stem"] == "cifar" and saved["test_images"] == 8
    assert 0 <= saved["top1"] <= saved["top5"] <= 100 and saved["encoder_unchanged"]
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1


def test_the_probe_learns_separable_data_and_scores_every_test_image_once(tmp_path):
    data = colour_folder(tmp_path / "data")
    result = linear_eval.main(probe_args(data, tmp_path / "out", "--random_init", "--encoder", "resnet18",
                                         "--epochs", "8", "--batch_size", "4", "--lr", "0.05"))
    assert result["test_images"] == 14  # 14 = 3 batches of 4 and a remainder of 2
    assert result["top1"] >= 90, result


def test_knn_separates_separable_data(tmp_path):
    data = colour_folder(tmp_path / "data")
    result = linear_eval.main(probe_args(data, tmp_path / "out", "--random_init", "--encoder", "resnet18",
                                         "--mode", "knn", "--knn_k", "5", "--batch_size", "6"))
    assert result["test_images"] == 14 and result["top1"] >= 90, result


def test_a_change_to_the_frozen_encoder_would_be_caught(pretrained, folder, tmp_path, monkeypatch):
    # What a stray forward in train() mode does: move a BatchNorm running mean. The probe must notice.
    real_build, real_view, bn = linear_eval.build, linear_eval.train_view, []

    def build(args, device):
        out = real_build(args, device)
        bn.append(next(m for m in out[3].modules() if isinstance(m, torch.nn.BatchNorm2d)))
        return out

    def train_view(*a):
        bn[0].running_mean += 1e-3
        return real_view(*a)

    monkeypatch.setattr(linear_eval, "build", build)
    monkeypatch.setattr(linear_eval, "train_view", train_view)
    with pytest.raises(AssertionError, match="frozen encoder changed"):
        linear_eval.main(probe_args(folder, tmp_path, "--checkpoint", str(pretrained / "checkpoint.pt"), "--epochs", "1"))


def test_the_lr_never_rounds_to_zero_for_small_batches():
    parse = lambda *a: linear_eval.validate(linear_eval.get_args_parser().parse_args(["--random_init", "--encoder", "resnet18", *a]))
    assert parse("--batch_size", "64").lr == pytest.approx(0.025)
    assert parse("--batch_size", "8").lr == pytest.approx(0.003125)
    assert parse("--batch_size", "512").lr == pytest.approx(0.2)
    ft = parse("--mode", "finetune", "--label_fraction", "0.01")
    assert (ft.lr, ft.head_lr, ft.epochs) == (0.02, 0.5, 20)


def test_finetuning_uses_plain_momentum_and_the_linear_probe_nesterov():
    parse = lambda *a: linear_eval.validate(linear_eval.get_args_parser().parse_args(["--random_init", "--encoder", "resnet18", *a]))
    assert parse("--mode", "finetune", "--label_fraction", "0.1").nesterov is False  # the paper: momentum 0.9
    assert parse().nesterov is True  # SimCLR's linear protocol
    assert parse("--mode", "finetune", "--label_fraction", "0.1", "--nesterov").nesterov is True


def test_an_imagenet_sized_folder_is_evaluated_with_resize_256_and_centre_crop_224(tmp_path):
    # Table 3's Places205 probe: the test images get ImageNet's evaluation preprocessing
    root = tmp_path / "places"
    for split in ("train", "val"):
        (root / split / "c0").mkdir(parents=True)
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(root / split / "c0" / "a.png")
    args = linear_eval.validate(linear_eval.get_args_parser().parse_args(probe_args(str(root), tmp_path / "o", "--random_init",
                                                                                    "--encoder", "resnet18", "--image_size", "224")))
    train, test, spec, *_ = linear_eval.build(args, torch.device("cpu"))
    img = Image.open(root / "val" / "c0" / "a.png").convert("RGB")
    expected = TF.pil_to_tensor(TF.center_crop(TF.resize(img, 256), 224))
    assert spec.size == 224 and torch.equal(test.images[0], expected)


def test_the_places205_protocol_decays_the_lr_tenfold_each_third_with_weight_decay(tmp_path, monkeypatch):
    # Appendix A.1, Table 3: SGD lr 0.01, momentum 0.9 (not Nesterov), wd 5e-4, lr x0.1 at equal intervals.
    assert [linear_eval.probe_lr(e * 10, 10, 14, 0.01, "step") for e in (0, 4, 5, 9, 10, 13)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001])
    seen = []
    real = torch.optim.SGD

    def spy(params, **k):
        seen.append(k)
        return real(params, **k)

    monkeypatch.setattr(linear_eval.torch.optim, "SGD", spy)
    data = colour_folder(tmp_path / "data")
    result = linear_eval.main(probe_args(data, tmp_path / "out", "--random_init", "--encoder", "resnet18", "--epochs", "3",
                                         "--lr", "0.01", "--schedule", "step", "--weight_decay", "5e-4", "--no-nesterov"))
    assert seen == [{"momentum": 0.9, "nesterov": False, "weight_decay": 5e-4}]
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.01, 0.001, 0.0001])  # the last step of each epoch
    assert (result["schedule"], result["weight_decay"], result["nesterov"]) == ("step", 5e-4, False)


@pytest.mark.parametrize("mode, saved", [(["--mode", "linear"], "head"),
                                         (["--mode", "finetune", "--label_fraction", "0.5"], "model")])
def test_an_interrupted_probe_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path, monkeypatch, capsys, mode, saved):
    data = colour_folder(tmp_path / "data")  # 32 training images (16 when fine-tuning on half): batches of 4
    argv = lambda out, *a: probe_args(data, tmp_path / out, "--random_init", "--encoder", "resnet18", "--epochs", "3",
                                      "--batch_size", "4", "--lr", "0.05", *mode, *a)
    straight = linear_eval.main(argv("straight"))
    real, saves = linear_eval.misc.save_atomic, []

    def killed_saving_epoch_two(*a):  # after epoch 2's log line: the resumed probe must drop it and redo epoch 2
        saves.append(1)
        if len(saves) == 2:
            raise RuntimeError("killed")
        return real(*a)

    monkeypatch.setattr(linear_eval.misc, "save_atomic", killed_saving_epoch_two)
    with pytest.raises(RuntimeError, match="killed"):
        linear_eval.main(argv("resumed"))
    monkeypatch.setattr(linear_eval.misc, "save_atomic", real)
    assert len((tmp_path / "resumed" / "log.jsonl").read_text().splitlines()) == 2
    assert torch.load(tmp_path / "resumed" / "probe_checkpoint.pt", weights_only=True)["epoch"] == 1
    assert "belongs to a probe with other arguments (--lr 0.05 -> 0.1)" in run_error(
        argv("resumed", "--lr", "0.1"), capsys, linear_eval.main)
    resumed = linear_eval.main(argv("resumed"))
    assert "resuming the probe" in capsys.readouterr().out
    weights = [torch.load(tmp_path / d / "probe_checkpoint.pt", weights_only=True)[saved] for d in ("straight", "resumed")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # BatchNorm statistics too
    assert resumed["top1"] == straight["top1"]
    logs = [[json.loads(line) for line in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("straight", "resumed")]
    assert [r["epoch"] for r in logs[1]] == [1, 2, 3] and [r["loss"] for r in logs[1]] == [r["loss"] for r in logs[0]]


def test_a_pretraining_run_directory_is_not_used_for_a_probe(pretrained, folder, capsys):
    log = (pretrained / "log.jsonl").read_text()
    assert "holds a pretraining run of aavae.py" in run_error(
        probe_args(folder, pretrained, "--checkpoint", str(pretrained / "checkpoint.pt")), capsys, linear_eval.main)
    assert (pretrained / "log.jsonl").read_text() == log


def test_the_optimizer_holds_only_the_head(pretrained, folder, tmp_path, monkeypatch):
    seen = []
    real = linear_eval.fit

    def spy(*a, **k):
        optimizer = real(*a, **k)
        seen.append(sum(p.numel() for g in optimizer.param_groups for p in g["params"]))
        return optimizer

    monkeypatch.setattr(linear_eval, "fit", spy)
    linear_eval.main(probe_args(folder, tmp_path, "--checkpoint", str(pretrained / "checkpoint.pt"), "--epochs", "1"))
    assert seen == [512 * 2 + 2]  # Linear(512, 2 classes)


def test_finetune_changes_the_backbone_and_uses_a_label_subset(pretrained, folder, tmp_path):
    result = linear_eval.main(probe_args(folder, tmp_path, "--checkpoint", str(pretrained / "checkpoint.pt"),
                                         "--mode", "finetune", "--label_fraction", "0.25", "--epochs", "1", "--batch_size", "2"))
    assert result["train_images"] == 6 and result["backbone_tensors_changed"] > 50 and result["test_images"] == 8


def test_finetune_starts_from_a_zero_standardised_head_at_lrs_scaled_by_the_batch(pretrained, folder, tmp_path):
    """The old head (a default-initialised Linear on raw features, lrs unscaled) started wherever the features'
    scale put it and diverged on small subsets; this one's first loss is log(classes) whatever the encoder."""
    result = linear_eval.main(probe_args(folder, tmp_path, "--checkpoint", str(pretrained / "checkpoint.pt"),
                                         "--mode", "finetune", "--label_fraction", "0.25", "--epochs", "1", "--batch_size", "6",
                                         "--lr", "0.04", "--head_lr", "0.8"))
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert abs(log[0]["loss"] - math.log(2)) < 1e-6  # one step: zero logits
    assert result["backbone_tensors_changed"] == 0  # a zero head passes no gradient back on its first step
    assert result["head"] == "standardised" and result["lr_scale"] == 6 / 256
    assert (result["backbone_lr"], result["head_lr"]) == (0.04, 0.8)  # as given, at batch 256
    groups = torch.load(tmp_path / "probe_checkpoint.pt", weights_only=False)["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([0.04 * 6 / 256, 0.8 * 6 / 256])  # the one step's, at the cosine's start


def test_finetune_subset_file_names_the_training_images(pretrained, folder, tmp_path):
    # Names are matched by file name, as in SimCLR's ImageNet subset lists; here 000-004.png exist in both classes.
    names = sorted(os.listdir(os.path.join(folder, "train", "class0")))[:5]
    (tmp_path / "subset.txt").write_text("\n".join(names) + "\n")
    result = linear_eval.main(probe_args(folder, tmp_path / "out", "--checkpoint", str(pretrained / "checkpoint.pt"),
                                         "--mode", "finetune", "--subset_file", str(tmp_path / "subset.txt"), "--epochs", "1"))
    assert result["train_images"] == 10


def test_similarity_writes_its_picture_and_means(pretrained, folder, tmp_path):
    result = linear_eval.main(probe_args(folder, tmp_path, "--checkpoint", str(pretrained / "checkpoint.pt"),
                                         "--mode", "similarity", "--num_images", "4", "--views", "3"))
    assert result["latent"] == "mu" and result["num_images"] == 4
    assert -1 <= result["sim_diff"] <= 1 and -1 <= result["sim_same"] <= 1
    with Image.open(tmp_path / "similarity.png") as picture:
        assert picture.size == (4 * 3 * 12, 4 * 3 * 12)  # 12 pixels per view
    assert (tmp_path / "similarity_views.png").exists()


def test_wrong_architecture_corrupt_and_missing_checkpoints_are_refused(pretrained, folder, tmp_path, capsys):
    run = lambda *a: run_error(probe_args(folder, tmp_path / "o", *a), capsys, linear_eval.main)
    assert "does not exist" in run("--checkpoint", str(tmp_path / "nothing.pt"))
    (tmp_path / "corrupt.pt").write_bytes(b"\x00" * 100)
    assert "corrupt" in run("--checkpoint", str(tmp_path / "corrupt.pt"))
    torch.save(aavae.Decoder("decoder18", 8, 32, "cifar", 512).state_dict(), tmp_path / "decoder.pth")
    assert "not the state dict of a torchvision ResNet" in run("--checkpoint", str(tmp_path / "decoder.pth"))
    assert "not the --encoder resnet50" in run("--checkpoint", str(pretrained / "encoder.pth"), "--encoder", "resnet50")
    assert "does not fit a resnet18 encoder with the stl stem" in run("--checkpoint", str(pretrained / "encoder.pth"), "--stem", "stl")
    assert "either --checkpoint" in run()
    assert "--label_fraction and --subset_file belong to --mode finetune" in run("--random_init", "--encoder", "resnet18",
                                                                              "--mode", "knn", "--label_fraction", "0.1")


def test_the_probe_head_and_its_scores_are_float32_under_bf16_autocast(tmp_path, monkeypatch):
    seen, real = [], linear_eval.probe.correct
    monkeypatch.setattr(linear_eval.probe, "correct", lambda scores, labels: seen.append(scores.dtype) or real(scores, labels))
    data = colour_folder(tmp_path / "data")
    linear_eval.main(probe_args(data, tmp_path / "out", "--random_init", "--encoder", "resnet18", "--epochs", "1", "--amp"))
    assert seen and set(seen) == {torch.float32}  # bf16 logits would tie and round
    head = linear_eval.Head(8, 3)
    h = torch.randn(5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(h.bfloat16())
    assert torch.equal(logits, torch.nn.functional.linear(h.bfloat16().float(), head.weight, head.bias))


def test_a_finished_evaluation_is_kept_unless_overwrite(tmp_path, capsys):
    data = colour_folder(tmp_path / "data")
    argv = probe_args(data, tmp_path / "out", "--random_init", "--encoder", "resnet18", "--mode", "knn", "--knn_k", "5")
    linear_eval.main(argv)
    before = (tmp_path / "out" / "result.json").read_text()
    assert "result.json already exists; choose another --output_dir or pass --overwrite" in run_error(argv, capsys, linear_eval.main)
    assert (tmp_path / "out" / "result.json").read_text() == before
    assert linear_eval.main(argv + ["--overwrite"])["test_images"] == 14
