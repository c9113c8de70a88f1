"""The splits of Appendix A.1, with the torchvision datasets faked (no download here)."""
import argparse

import torch

import aavae
import data
from conftest import make_folder


def fake_cifar10(name, root, part):
    n = 10000 if part == "test" else 50000
    images = torch.zeros(1, 3, 32, 32, dtype=torch.uint8).expand(n, -1, -1, -1)
    return images, torch.arange(n) + (10 ** 6 if part == "test" else 0)  # labels name the images


def test_cifar10_splits_follow_the_paper(monkeypatch):
    monkeypatch.setattr(data, "_torchvision_dataset", fake_cifar10)
    args = aavae.validate(aavae.get_args_parser().parse_args(["--dataset", "cifar10", "--in_memory"]))
    train, held, spec = data.load_data(args, torch.device("cpu"))
    assert (len(train), len(held), spec.size, args.stem, spec.jitter, spec.blur) == (45000, 5000, 32, "cifar", 0.5, False)
    assert not set(train.labels.tolist()) & set(held.labels.tolist())
    # the seeded hold-out is the one torch.utils.data.random_split draws with seed 42
    ref = torch.utils.data.random_split(range(50000), [45000, 5000], generator=torch.Generator().manual_seed(42))
    assert set(held.labels.tolist()) == set(ref[1].indices)
    probe_train, test, _ = data.load_data(args, torch.device("cpu"), probe=True)
    assert torch.equal(probe_train.labels, train.labels) and len(test) == 10000 and test.labels.min() == 10 ** 6


def test_stl10_original_is_resize_105_then_centre_crop_96():
    u8 = torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8)
    out = data.stl10_original(u8)
    assert out.shape == (2, 3, 96, 96) and out.dtype == torch.uint8
    assert not torch.equal(out, u8)  # a mild zoom, not the identity


def test_stem_and_augmentation_follow_the_image_size_for_folders(tmp_path):
    for size, stem, blur in [(32, "cifar", False), (96, "stl", True), (224, "imagenet", True)]:
        root = make_folder(tmp_path / str(size), classes=1, train=1, val=1, size=size)
        args = argparse.Namespace(dataset="folder", data_path=root, stem="auto", image_size=None, jitter_strength=None,
                                  blur=None, in_memory=None)
        spec = data.dataset_spec(data.resolve_data(args))
        assert spec.size == args.image_size == size and args.in_memory
        assert (args.stem, spec.blur, spec.jitter) == (stem, blur, 0.5 if size == 32 else 1.0)
