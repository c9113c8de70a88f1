"""Bad input gets one sentence and a non-zero exit; nothing already on disk is damaged."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import aavae
import linear_eval
from conftest import SIZE, make_folder, read_log, tiny_args
from test_train import run_error


def test_grayscale_rgba_and_odd_sized_images_are_converted_and_train(tmp_path):
    data = make_folder(tmp_path / "data", train=8, val=2)
    rng = np.random.default_rng(0)
    cls = tmp_path / "data" / "train" / "class0"
    Image.fromarray(rng.integers(0, 256, (45, 37), dtype=np.uint8), "L").save(cls / "gray.png")
    Image.fromarray(rng.integers(0, 256, (20, 50, 4), dtype=np.uint8), "RGBA").save(cls / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (71, 33, 3), dtype=np.uint8)).save(cls / "odd.jpg")
    for memory in ("--in_memory", "--no-in_memory"):
        out = tmp_path / memory
        aavae.main(tiny_args(data, out, memory, "--image_size", str(SIZE), "--max_steps", "2"))
        assert [r["step"] for r in read_log(out) if "loss" in r] == [1, 2]


@pytest.mark.parametrize("memory, split", [("--in_memory", "train"), ("--no-in_memory", "val")])
def test_a_corrupt_image_is_named(tmp_path, capsys, memory, split):
    # In memory, every file is decoded at start; streamed, a file is read when it is first sampled
    # (here: at validation, which reads the whole held-out split).
    data = make_folder(tmp_path / "data", train=8, val=2)
    bad = tmp_path / "data" / split / "class1" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    err = run_error(tiny_args(data, tmp_path / "out", memory, "--max_steps", "2"), capsys)
    assert "cannot read image" in err and "broken.png" in err


def test_an_output_dir_with_another_run_is_refused_unless_overwrite(folder, tmp_path, capsys):
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "1"))
    before = {f: (tmp_path / f).read_bytes() for f in ("checkpoint.pt", "log.jsonl", "args.json")}
    err = run_error(tiny_args(folder, tmp_path, "--max_steps", "1", "--latent_dim", "64"), capsys)
    assert "holds a run with other arguments" in err and "--latent_dim 128 -> 64" in err
    assert {f: (tmp_path / f).read_bytes() for f in before} == before
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "1", "--latent_dim", "64", "--overwrite"))
    assert json.loads((tmp_path / "args.json").read_text())["latent_dim"] == 64
    assert len(read_log(tmp_path)) == 2  # one training line and one validation line: the old log is gone


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch exploited",))


def test_a_checkpoint_that_needs_unpickling_is_refused(folder, tmp_path, capsys, monkeypatch):
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "1"))
    monkeypatch.chdir(tmp_path)
    torch.save({"model": Exploit(), "optimizer": {}, "step": 1}, tmp_path / "checkpoint.pt")
    err = run_error(tiny_args(folder, tmp_path, "--max_steps", "2"), capsys)
    assert "needs arbitrary unpickling, which is refused" in err
    assert not (tmp_path / "exploited").exists()
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    assert "corrupt" in run_error(tiny_args(folder, tmp_path, "--max_steps", "2"), capsys)


def test_a_checkpoint_of_another_architecture_is_refused(folder, tmp_path, capsys):
    aavae.main(tiny_args(folder, tmp_path / "r18", "--max_steps", "1"))
    aavae.main(tiny_args(folder, tmp_path / "r34", "--max_steps", "1", "--encoder", "resnet34"))
    shutil.copy(tmp_path / "r34" / "checkpoint.pt", tmp_path / "r18" / "checkpoint.pt")
    before = (tmp_path / "r18" / "checkpoint.pt").read_bytes()
    assert "does not fit this model" in run_error(tiny_args(folder, tmp_path / "r18", "--max_steps", "2"), capsys)
    assert (tmp_path / "r18" / "checkpoint.pt").read_bytes() == before


def test_an_image_size_the_decoder_cannot_produce_is_refused(folder, tmp_path, capsys):
    assert "not a multiple of 8" in run_error(tiny_args(folder, tmp_path, "--image_size", "30"), capsys)


def test_a_resume_that_switches_the_memory_path_is_refused(folder, tmp_path, capsys):
    # In memory a batch is cropped on the device from one random stream, streamed each image is cropped in PIL
    # from a stream of its own: the steps after a switch would be another run's.
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "1", "--in_memory"))
    before = (tmp_path / "checkpoint.pt").read_bytes()
    err = run_error(tiny_args(folder, tmp_path, "--max_steps", "2", "--no-in_memory"), capsys)
    assert "holds a run with other arguments" in err and "--in_memory True -> False" in err
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "2"))  # the default path here is memory's: it resumes
    assert [r["step"] for r in read_log(tmp_path) if "loss" in r] == [1, 2]


def test_a_flat_val_folder_is_refused_with_the_layout_it_needs(tmp_path, capsys):
    # ILSVRC2012's validation archive unpacks as 50,000 files in one folder, without the classes' sub-folders.
    data = make_folder(tmp_path / "data", train=8, val=2)
    val = tmp_path / "data" / "val"
    for c in list(val.iterdir()):
        for f in c.iterdir():
            f.rename(val / f"{c.name}-{f.name}")
        c.rmdir()
    probe = ["--random_init", "--encoder", "resnet18", "--dataset", "imagenet", "--data_path", data, "--workers", "0"]
    err = run_error(probe, capsys, main=linear_eval.main)
    assert "holds image files but no class sub-folders" in err and "torchvision.datasets.ImageNet" in err
    assert f"{val} " in err and "ILSVRC2012_devkit_t12.tar.gz" in err
    assert "no class sub-folders" in run_error(tiny_args(data, tmp_path / "out"), capsys)  # a folder's val/ too


def test_a_val_folder_is_labelled_by_trains_class_names_and_one_with_other_classes_or_none_is_refused(tmp_path, capsys):
    data = make_folder(tmp_path / "data", classes=3, train=4, val=2)
    shutil.rmtree(tmp_path / "data" / "val" / "class1")  # val/ without a class: ImageFolder alone would call class2 1
    args = aavae.validate(aavae.get_args_parser().parse_args(tiny_args(data, tmp_path / "out")))
    _, val, _ = aavae.load_data(args, torch.device("cpu"))
    assert [(os.path.basename(os.path.dirname(p)), y) for p, y in zip(val.paths, val.labels.tolist())] == \
        [("class0", 0)] * 2 + [("class2", 2)] * 2
    (tmp_path / "data" / "val" / "class2").rename(tmp_path / "data" / "val" / "other")
    err = run_error(tiny_args(data, tmp_path / "out"), capsys)
    assert "holds class sub-folders that" in err and "has not (other)" in err and str(tmp_path / "data" / "val") in err
    assert not (tmp_path / "out" / "log.jsonl").exists()  # refused before any training
    shutil.rmtree(tmp_path / "data" / "val")
    err = run_error(tiny_args(data, tmp_path / "out"), capsys)
    assert "expected an ImageFolder tree" in err and str(tmp_path / "data" / "val") in err
    assert not (tmp_path / "out" / "log.jsonl").exists()


def test_a_label_list_that_names_an_image_outside_train_is_refused(folder, tmp_path, capsys):
    listed = tmp_path / "labels.txt"
    listed.write_text("class0/000.png\nclass1/001.png\nclass1/999.png\n")  # the last is not in train/
    probe = ["--random_init", "--encoder", "resnet18", "--dataset", "folder", "--data_path", folder, "--workers", "0",
             "--cached_features", "--subset_file", str(listed), "--output_dir", str(tmp_path / "out")]
    err = run_error(probe, capsys, main=linear_eval.main)
    assert "names 1 image(s) that are not in the training split, class1/999.png the first" in err
    assert not (tmp_path / "out" / "result.json").exists()
