"""The splits of Appendix A.1, with the torchvision datasets faked (no download here)."""
import argparse
import json
import os
import shutil

import pytest
import torch
import torchvision

import aavae
from util import data
from util import misc
from conftest import MINI, NO_MINI, make_folder


def fake_cifar10(name, root, part):
    n = 10000 if part == "test" else 50000
    images = torch.zeros(1, 3, 32, 32, dtype=torch.uint8).expand(n, -1, -1, -1)
    return images, torch.arange(n) + (10 ** 6 if part == "test" else 0)  # labels name the images


def test_cifar10_splits_follow_the_paper(monkeypatch):
    monkeypatch.setattr(data, "_torchvision_dataset", fake_cifar10)
    args = aavae.validate(aavae.get_args_parser().parse_args(["--dataset", "cifar10", "--in_memory"]))
    train, held, spec = aavae.load_data(args, torch.device("cpu"))
    assert (len(train), len(held), spec.size, args.stem, spec.jitter, spec.blur) == (45000, 5000, 32, "cifar", 0.5, False)
    assert not set(train.labels.tolist()) & set(held.labels.tolist())
    # the seeded hold-out is the one torch.utils.data.random_split draws with seed 42
    ref = torch.utils.data.random_split(range(50000), [45000, 5000], generator=torch.Generator().manual_seed(42))
    assert set(held.labels.tolist()) == set(ref[1].indices)
    probe_train, test, _ = aavae.load_data(args, torch.device("cpu"), probe=True)
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
        spec = aavae.augment_spec(data.resolve_data(args))
        assert spec.size == args.image_size == size and args.in_memory
        assert (args.stem, spec.blur, spec.jitter) == (stem, blur, 0.5 if size == 32 else 1.0)


def test_a_streamed_training_run_starts_its_workers_once_for_all_its_epochs(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data", classes=2, train=4, val=1)
    args = aavae.validate(aavae.get_args_parser().parse_args(["--dataset", "folder", "--data_path", root, "--no-in_memory"]))
    train, _, _ = aavae.load_data(args, torch.device("cpu"))
    log, real = tmp_path / "pids", data._read_rgb

    def read(path):  # runs in the worker processes, which fork with it
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(path)

    monkeypatch.setattr(data, "_read_rgb", read)
    stream = data.TrainBatches(train, 4, 0, 1, views=1, workers=1)(0, ("crops", 0, 0))
    views = [next(stream)[1] for _ in range(6)]  # three epochs of two steps
    assert len(set(log.read_text().split())) == 1  # one worker process served all three epochs
    again = data.TrainBatches(train, 4, 0, 1, views=1, workers=0)(2, ("crops", 0, 0))  # resumed at step 2, no workers
    assert all(torch.equal(next(again)[1], v) for v in views[2:])  # the epoch travels with each image's key
    assert not torch.equal(views[0], views[2])


def test_the_default_workers_share_the_cores_of_a_node_among_its_processes(monkeypatch):
    monkeypatch.setattr(misc.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert misc.default_workers() == 15  # one process: every core but its own
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert misc.default_workers() == 3
    monkeypatch.setattr(misc.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert misc.default_workers() == 1


def test_a_small_folder_is_decoded_without_worker_processes_and_without_drawing_crops(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data", classes=2, train=4, val=1)
    seen, real = [], torch.utils.data.DataLoader
    monkeypatch.setattr(data.torch.utils.data, "DataLoader", lambda *a, **k: seen.append(k["num_workers"]) or real(*a, **k))
    args = aavae.validate(aavae.get_args_parser().parse_args(["--dataset", "folder", "--data_path", root, "--workers", "4"]))
    train, held, spec = aavae.load_data(args, torch.device("cpu"))
    assert seen == [0, 0] and train.images.shape == (8, 3, 16, 16)  # 8 and 2 images: under DECODES_PER_WORKER
    # in memory an image is its original alone: no crop is drawn (they cost a millisecond an image)
    drawn, real_boxes = [], type(spec).crop_boxes
    monkeypatch.setattr(type(spec), "crop_boxes", lambda self, n, *a: drawn.append(n) or real_boxes(self, n, *a))
    assert torch.equal(aavae.load_data(args, torch.device("cpu"))[0].images, train.images) and drawn == []
    folder = data.ViewFolder(torchvision.datasets.ImageFolder(os.path.join(root, "train")).samples, spec, 16, 0)
    assert len(folder[(0, 2, 0)]) == 5 and drawn == [2]  # original, two views, label, error: the views draw theirs


def test_the_monitor_holds_ten_labelled_images_per_class_where_a_thousand_would_not(tmp_path):
    parse = lambda *a: aavae.validate(aavae.get_args_parser().parse_args(list(a)))
    assert parse("--dataset", "cifar10").monitor_images == 1000
    root = tmp_path / "imagenet"
    for c in range(150):
        (root / "train" / f"n{c:08d}").mkdir(parents=True)
    assert parse("--dataset", "imagenet", "--data_path", str(root)).monitor_images == 1500
    assert parse("--dataset", "imagenet", "--data_path", str(root), "--monitor_images", "0").monitor_images == 0


def test_a_dataset_that_cannot_be_downloaded_is_named_in_one_sentence(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise RuntimeError("Temporary failure in name resolution")

    monkeypatch.setattr(data.torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(misc.UserError, match=r"cifar10 is not under --data_path .* and could not be downloaded there "
                                              r"\(Temporary failure in name resolution\)"):
        data._torchvision_dataset("cifar10", str(tmp_path), "train")


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10_batches(root, images, labels, per_batch):
    """CIFAR-10's python training batches (data_batch_1 ... 5, batches.meta) under root, per_batch images each
    from images (N, 32, 32, 3) uint8 in order: a truncated CIFAR-10, in the format torchvision reads."""
    import pickle
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    for b in range(5):
        part = slice(b * per_batch, (b + 1) * per_batch)
        rows = images[part].transpose(0, 3, 1, 2).reshape(per_batch, -1)  # CIFAR's rows: R plane, G, B
        with open(os.path.join(folder, f"data_batch_{b + 1}"), "wb") as f:
            pickle.dump({"data": rows, "labels": [int(y) for y in labels[part]]}, f)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES}, f)


def read_tree(root):
    """{(split, class, file name): pixels} of an ImageFolder tree of PNGs."""
    import numpy as np
    from PIL import Image
    return {(s, c, name): np.asarray(Image.open(os.path.join(root, s, c, name)).convert("RGB"))
            for s in ("train", "val") for c in sorted(os.listdir(os.path.join(root, s)))
            for name in sorted(os.listdir(os.path.join(root, s, c)))}


@pytest.mark.skipif(not os.path.isdir(MINI), reason=NO_MINI)
def test_cifar10_mini_is_rebuilt_from_cifar10s_training_batches_image_for_image(tmp_path, monkeypatch):
    import numpy as np
    mini = read_tree(MINI)
    # the 5,085 images in CIFAR-10's order: train/ then val/, each by its index within the split
    order = sorted(mini, key=lambda k: (k[0] == "val", int(os.path.splitext(k[2])[0])))
    assert [int(os.path.splitext(k[2])[0]) for k in order] == list(range(4085)) + list(range(1000))
    images = np.stack([mini[k] for k in order])
    labels = [CIFAR10_CLASSES.index(k[1]) for k in order]
    write_cifar10_batches(tmp_path / "cifar10", images, labels, per_batch=data.MINI_PER_BATCH)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)  # no checksum, no download
    built = data.build_cifar10_mini(str(tmp_path / "cifar10"), str(tmp_path / "mini"))
    again = read_tree(built)
    assert again.keys() == mini.keys()  # every file in the same split and class, under the same name
    assert all(np.array_equal(again[k], mini[k]) for k in mini)  # and the same pixels
    assert not (tmp_path / "mini.partial").exists()


def test_the_small_profile_makes_its_data_from_cifar10_when_no_folder_is_given(tmp_path, monkeypatch):
    import numpy as np

    from experiments import grid
    monkeypatch.setattr(data, "MINI_PER_BATCH", 6)  # a CIFAR-10 of 5 x 8 images, of which cifar10-mini keeps 5 x 6
    monkeypatch.setattr(data, "MINI_VAL", 10)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    write_cifar10_batches(tmp_path / "cifar10", images, np.arange(40) % 10, per_batch=8)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    (tmp_path / "cifar10-mini.partial" / "train").mkdir(parents=True)  # what an interrupted build leaves
    out = tmp_path / "S"
    grid.main(["--profile", "small", "--data_root", str(tmp_path), "--output_dir", str(out), "--in_process",
                      "--rows", "random init", "--no-label_evals"])
    tree = read_tree(tmp_path / "cifar10-mini")
    assert sorted(k[2] for k in tree if k[0] == "val") == [f"{i:05d}.png" for i in range(10)]
    assert sorted(k[2] for k in tree if k[0] == "train") == [f"{i:05d}.png" for i in range(20)]
    # the first six of each batch of eight, in order: the last ten of those are val/
    kept = [b * 8 + j for b in range(5) for j in range(6)]
    for k, i in enumerate(kept):
        split, index = ("train", k) if k < 20 else ("val", k - 20)
        assert np.array_equal(tree[(split, CIFAR10_CLASSES[i % 10], f"{index:05d}.png")], images[i])
    result = json.loads((out / "evals" / "linear-random" / "result.json").read_text())
    assert result["test_images"] == 10 and len(result["correct"]) == 10
    assert "cifar10-mini" in (out / "table1.md").read_text()
    # a folder whose steps are all done is reported again without the data: nothing is made, nothing downloaded
    shutil.rmtree(tmp_path / "cifar10-mini"), shutil.rmtree(tmp_path / "cifar10")
    (out / "table1.md").unlink()
    grid.main(["--profile", "small", "--data_root", str(tmp_path), "--output_dir", str(out), "--in_process",
                      "--rows", "random init", "--no-label_evals"])
    assert not (tmp_path / "cifar10-mini").exists() and not (tmp_path / "cifar10").exists()
    assert (out / "table1.md").exists()


def test_the_split_profile_makes_cifar10s_own_45000_5000_split_when_no_folder_is_given(tmp_path, monkeypatch):
    """Without --data_path, --profile split writes CIFAR-10's training set as train/ and val/, split by the same
    seeded draw as aavae.py --dataset cifar10's held-out images, each file named by its index in CIFAR-10."""
    import numpy as np

    from experiments import grid
    monkeypatch.setattr(data, "SPLIT_VAL", 10)  # a CIFAR-10 of 40 images, 10 of them val/
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    write_cifar10_batches(tmp_path / "cifar10", images, np.arange(40) % 10, per_batch=8)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    out = tmp_path / "S"
    grid.main(["--profile", "split", "--data_root", str(tmp_path), "--output_dir", str(out), "--in_process",
               "--rows", "random init"])
    tree = read_tree(tmp_path / "cifar10-split")
    keep, held = data._held_out(40, 10)
    assert sorted(int(k[2][:5]) for k in tree if k[0] == "val") == held.tolist()
    assert sorted(int(k[2][:5]) for k in tree if k[0] == "train") == keep.tolist()
    for (split, c, name), pixels in tree.items():
        assert c == CIFAR10_CLASSES[int(name[:5]) % 10] and np.array_equal(pixels, images[int(name[:5])])
    result = json.loads((out / "evals" / "linear-random" / "result.json").read_text())
    assert result["test_images"] == 10 and "cifar10-split" in (out / "table1.md").read_text()
