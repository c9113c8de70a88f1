"""run_all.sh / experiments/: every cell of the paper's grid, and the quick profile end to end."""
import argparse
import contextlib
import csv
import io
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from experiments import grid, report
from conftest import ROOT, make_folder

TABLES = ["table1", "fig2", "fig3", "fig4_batch", "fig4_latent", "fig4_decoder", "fig4_logscale", "fig5", "table2",
          "regularisers"]


def test_the_paper_dry_run_lists_a_command_for_every_cell():
    r = subprocess.run(["bash", os.path.join(ROOT, "run_all.sh"), "--profile", "paper", "--data_root", "/data",
                        "--places_path", "/data/places205", "--output_dir", "R", "--dry_run"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    commands = [line for line in r.stdout.splitlines() if line.startswith(("python aavae.py", "python linear_eval.py",
                                                                           "python -m methods."))]
    assert len(commands) >= 20 and len(commands) == r.stdout.count("GPU-h\n")
    g = grid.build_grid(argparse.Namespace(profile="paper", data_root="/data", data_path=None,
                                                  places_path="/data/places205", nproc=1, output_dir="R", subset_dir=None))
    tables = {c.table for c in g.cells}
    assert set(TABLES) | {"table3"} <= tables
    for c in g.cells:  # every cell's evaluation is one of the listed commands
        assert any(f"--output_dir {c.eval}" in cmd for cmd in commands), c
    for d in ("cifar10", "stl10", "imagenet"):
        for m in ("ae", "aaae", "vae", "aavae"):
            assert any(f"--dataset {d}" in cmd and f"--method {m} " in cmd for cmd in commands), (d, m)
    assert re.search(r"~\d+ GPU-hours", r.stdout)


def flag(cmd, name, default=None):
    return cmd[cmd.index(name) + 1] if name in cmd else default


def test_the_paper_dry_run_sweeps_only_the_decoder_and_syncs_batchnorm_over_processes():
    r = subprocess.run(["bash", os.path.join(ROOT, "run_all.sh"), "--profile", "paper", "--data_root", "/data", "--nproc", "4",
                        "--output_dir", "R", "--dry_run"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    commands = [line.split() for line in r.stdout.splitlines() if line.startswith("torchrun")]
    assert len(commands) == r.stdout.count("GPU-h\n") > 20
    assert all("--sync_bn" in cmd for cmd in commands)  # BatchNorm over the global batch, as on one GPU
    pretrain = {flag(cmd, "--output_dir"): cmd for cmd in commands if "aavae.py" in cmd}
    probes = [cmd for cmd in commands if "linear_eval.py" in cmd and "/fig4-decoder" in flag(cmd, "--output_dir")]
    runs = [pretrain[os.path.dirname(flag(cmd, "--checkpoint"))] for cmd in probes]
    assert sorted(flag(cmd, "--decoder", "decoder50") for cmd in runs) == ["decoder18", "decoder34", "decoder50"]
    assert all(flag(cmd, "--encoder") == "resnet50" and flag(cmd, "--dataset") == "cifar10" for cmd in runs)


def test_the_paper_report_sets_the_papers_aaae_figures_beside_the_authors_model_alone(tmp_path):
    # The paper's AAAE row is the authors' model, which reconstructs the augmented view: its figures must sit
    # beside the row whose runs pretrain with --target augmented, and never beside the original-target aaae.
    args = argparse.Namespace(profile="paper", data_root="/data", data_path=None, places_path=None, nproc=1,
                              output_dir=str(tmp_path), subset_dir=None)
    g = grid.build_grid(args)
    pretrain = {st.dir: shlex.join(st.cmd) for st in g.steps if st.kind == "pretrain"}
    probes = {st.dir: st.cmd for st in g.steps if st.kind == "eval"}
    for c in g.cells:  # every evaluation scores 40 %
        os.makedirs(c.eval, exist_ok=True)
        (tmp_path / c.eval / "result.json").write_text(json.dumps({"top1": 40.0}))
    report.report(g, args)
    table = {r[0]: r for r in rows((tmp_path / "table1.md").read_text())}
    for k, d in enumerate(("cifar10", "stl10", "imagenet")):
        paper = report.fmt(grid.PAPER_TABLE1["aaae"][d])
        assert [row for row, cells in table.items() if cells[2 + 3 * k] == paper] == ["aaae, augmented target"], d
        assert table["aaae"][2 + 3 * k] == table["aaae"][3 + 3 * k] == "—"  # no paper figure, no difference
    runs = {row: {pretrain[os.path.dirname(flag(probes[c.eval], "--checkpoint"))] for c in g.cells
                  if c.table == "table1" and c.row == row} for row in ("aaae", "aaae, augmented target")}
    assert len(runs["aaae, augmented target"]) == 5  # three seeds on CIFAR-10, one on STL-10 and ImageNet
    assert all("--method aaae --target augmented" in cmd for cmd in runs["aaae, augmented target"])
    assert all("--method aaae" in cmd and "--target" not in cmd for cmd in runs["aaae"])


MEASURED = {"table1": [1], "fig2": [2, 3], "fig3": [1], "fig4_batch": [1], "fig4_latent": [1], "fig4_decoder": [1],
            "fig4_logscale": [1], "fig5": [1, 2], "table2": [2, 5], "regularisers": [1, 2, 3]}


def rows(markdown):
    """The data rows of a markdown table, as lists of cell texts."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def test_the_quick_profile_runs_end_to_end_and_fills_every_table(tmp_path, capsys):
    data = make_folder(tmp_path / "data", classes=2, train=70, val=5, size=8)
    out = tmp_path / "R"
    argv = ["--profile", "quick", "--data_path", data, "--output_dir", str(out), "--in_process", "--quick_steps", "2"]
    grid.main(argv)
    for name, columns in MEASURED.items():
        table = rows((out / f"{name}.md").read_text())
        assert table, name
        for row in table:
            for c in columns:
                assert re.fullmatch(r"-?\d+(\.\d+)?", row[c]), (name, row)  # a measured number, not a dash
                assert math.isfinite(float(row[c])), (name, row)
    assert [r[0] for r in rows((out / "table1.md").read_text())] == [*grid.TABLE1_ROWS, "random init"]
    assert list(grid.TABLE1_ROWS) == ["ae", "aaae", "aaae, augmented target", "vae", "aavae"]
    fixed = [r for r in rows((out / "fig2.md").read_text()) if r[0] == "fixed"]
    assert len(fixed) == 2 and fixed[0][3] != fixed[1][3], "each segment reads its own validation"
    assert [r[0] for r in rows((out / "regularisers.md").read_text())] == grid.REGULARISERS
    assert (out / "results.json").exists() and (out / "results.csv").exists()
    capsys.readouterr()
    grid.main(argv)  # everything is done: nothing runs again, the tables are rewritten
    steps = re.search(r"(\d+) steps, (\d+) already done", capsys.readouterr().out)
    assert steps and steps.group(1) == steps.group(2)


def test_the_small_profile_writes_table1_with_both_aaae_rows_the_controls_paired_differences_and_curves(tmp_path):
    data = make_folder(tmp_path / "data", classes=2, train=70, val=5, size=8)
    out = tmp_path / "S"
    run = ["random init", "supervised", "simclr", "aaae", "aaae-authors", "aavae"]
    grid.main(["--profile", "small", "--data_path", data, "--output_dir", str(out), "--in_process", "--small_epochs", "1",
                      "--no-label_evals", "--rows", ",".join(run)])
    text = (out / "table1.md").read_text()
    table = rows(text)[:6]
    assert [r[0] for r in table] == ["random init", "supervised (control)", "SimCLR (control)", "aaae",
                                     "aaae, augmented target (the authors')", "aavae"]
    for r in table:  # cached linear and kNN top-1 measured for every encoder, each with its standard error
        for cell in r[1:3]:
            top1, se = map(float, cell.split(" ± "))
            assert 0 <= top1 <= 100 and se == pytest.approx(math.sqrt(top1 * (100 - top1) / 10), abs=0.01), r
    assert table[4][5] == "50.62" and table[3][5] == "—"  # the paper's AAAE row is the authors' model
    assert table[2][5] == "94.00" and table[5][5] == "87.14"
    paired = {r[0]: r for r in rows(text.split("# Paired differences")[1].split("# Seed")[0])}
    assert set(paired) == {"aavae - aaae", "aaae - aaae-authors", "simclr - aavae", "supervised - simclr"}  # no VAE or AE
    for r in paired.values():  # a difference of two accuracies on 10 images, with its standard error
        for cell in r[1:3]:
            diff, se = map(float, cell.split(" ± "))
            assert -100 <= diff <= 100 and 0 <= se <= 50 and round(diff * 10 / 100) == diff * 10 / 100, r
    with open(out / "curves.csv") as f:
        curves = list(csv.DictReader(f))
    assert {c["encoder"] for c in curves} == set(run) - {"random init"} and {c["epoch"] for c in curves} == {"1"}
    assert all(c["val_linear_top1"] and c["val_knn_top1"] and c["loss"] for c in curves)
    assert {c["encoder"] for c in curves if c["recon_mse"]} == {"aaae", "aaae-authors", "aavae"}  # the controls decode nothing
    record = json.loads((out / "run.json").read_text())["invocations"][0]
    assert record["command"].startswith("bash run_all.sh --profile small") and "git_commit" in record["provenance"]
    assert "No seed-1 run" in text and json.loads((out / "results.json").read_text())["seed_to_seed"] == []

    # seed-1 rows made of the other method's files: AAVAE's "seed 1" is AAAE's run and AAAE's is AAVAE's, so
    # each seed-to-seed difference is a paired difference of the two methods, with its sign known
    for row, other in (("aavae", "aaae"), ("aaae", "aavae")):
        shutil.copytree(out / "runs" / f"folder-{other}", out / "runs" / f"folder-{row}-s1")
        for probe in ("linear", "knn"):
            shutil.copytree(out / "evals" / f"{probe}-folder-{other}", out / "evals" / f"{probe}-folder-{row}-s1")
    grid.main(["--profile", "small", "--data_path", data, "--output_dir", str(out), "--report_only",
                      "--small_epochs", "1", "--no-label_evals", "--rows", ",".join(run + ["aaae-s1", "aavae-s1"])])
    text = (out / "table1.md").read_text()
    paired = {r[0]: r for r in rows(text.split("# Paired differences")[1].split("# Seed")[0])}
    seeds = {r[0]: r for r in rows(text.split("# Seed to seed")[1].split("# Fig. 5")[0])}
    lin, knn = paired["aavae - aaae"][1], paired["aavae - aaae"][2]
    negate = lambda cell: f"{-float(cell.split(' ± ')[0]) + 0.0:.2f} ± {cell.split(' ± ')[1]}"  # + 0.0: no -0.00
    assert paired["aavae - aaae"][3] == f"{negate(lin)}, {negate(knn)}"  # seed 1's AAVAE - AAAE is AAAE - AAVAE
    assert seeds["aavae"][3] == negate(lin) and seeds["aavae"][6] == negate(knn)
    assert seeds["aaae"][3] == lin and seeds["aaae"][6] == knn
    assert seeds["aavae"][1] == seeds["aaae"][2] and seeds["aavae"][2] == seeds["aaae"][1]


def test_the_small_profile_fine_tunes_probes_and_clusters_every_row_on_the_same_labelled_images(tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "SMALL_FINETUNE_EPOCHS", {0.01: 1, 0.1: 1})
    data = make_folder(tmp_path / "data", classes=2, train=70, val=5, size=8)
    out = tmp_path / "S"
    g = grid.main(["--profile", "small", "--data_path", data, "--output_dir", str(out), "--in_process",
                          "--small_epochs", "1", "--rows", "vae,aavae"])
    lists = {pct: (out / "label-subsets" / f"{pct}.txt").read_text().split() for pct in ("1percent", "10percent")}
    assert len(lists["1percent"]) == 2 and len(lists["10percent"]) == 14  # one and seven of each class's 70
    assert {name.split("/")[0] for name in lists["1percent"]} == {"class0", "class1"}
    assert all(os.path.exists(os.path.join(data, "train", name)) for pct in lists for name in lists[pct])
    for row in ("vae", "aavae"):
        for pct, n in (("1percent", 2), ("10percent", 14)):
            for mode in ("finetune", "linear"):
                r = json.loads((out / "evals" / f"{mode}-{pct}-folder-{row}" / "result.json").read_text())
                assert r["train_images"] == n and r["test_images"] == 10, (mode, pct)
        finetune = next(st.cmd for st in g.steps if st.dir.endswith(f"finetune-1percent-folder-{row}"))
        assert shlex.join(finetune).count("--lr 0.002 --head_lr 0.5") == 1  # Table 2's 1 % head lr, a tenth of its backbone's
        cluster = json.loads((out / "evals" / f"cluster-folder-{row}" / "result.json").read_text())
        assert cluster["clusters"] == 2 and len(cluster["correct"]) == 10
    text = (out / "table1.md").read_text()
    section = text.split("# Table 2 at the small budget")[1].split("# Cluster accuracy")[0].split("What fine-tuning adds")
    table2, gains = rows(section[0]), rows(section[1])
    assert [r[0] for r in table2] == ["vae", "aavae"] and all(" ± " in c for r in table2 for c in r[1:])
    hits = lambda name: json.loads((out / "evals" / name / "result.json").read_text())["correct"]
    assert [r[0] for r in gains] == ["vae", "aavae"]
    for r in gains:  # what fine-tuning adds to the probe: each row's two evaluations, paired image by image
        for pct, cell in zip(("1percent", "10percent"), r[1:], strict=True):
            d, se = report.paired_difference(hits(f"finetune-{pct}-folder-{r[0]}"), hits(f"linear-{pct}-folder-{r[0]}"))
            assert cell == report.fmt_se(d, se)
    clusters = rows(text.split("# Cluster accuracy")[1].split("# Paired differences, Table 2")[0])
    assert [r[0] for r in clusters] == ["vae", "aavae"] and all(" ± " in c for r in clusters for c in r[1:4])
    pairs = rows(text.split("# Paired differences, Table 2")[1])
    assert [r[0] for r in pairs] == ["aavae - vae"] and all(" ± " in c for c in pairs[0][1:])
    saved = json.loads((out / "results.json").read_text())
    assert [r["row"] for r in saved["table2"]] == ["vae", "aavae"] and saved["clusters"][1]["nmi"][0] is not None
    assert (out / "table2.png").exists() == report.have_matplotlib()  # the two tables as a picture
    before = (out / "label-subsets" / "1percent.txt").read_text()
    grid.main(["--profile", "small", "--data_path", data, "--output_dir", str(out), "--in_process",
                      "--small_epochs", "1", "--rows", "vae,aavae"])  # done: the lists are kept, nothing runs again
    assert (out / "label-subsets" / "1percent.txt").read_text() == before


def test_paired_differences_are_the_mean_and_standard_error_of_per_image_differences():
    mean, se = report.paired_difference([1, 1, 0, 1, 0], [0, 1, 0, 0, 1])  # differences 1, 0, 0, 1, -1
    assert mean == pytest.approx(20.0) and se == pytest.approx(100 * (0.7 / 5) ** 0.5)
    assert report.paired_difference([1, 0], [1]) == (None, None)  # not scored on the same images


def test_the_small_profile_chooses_a_recipe_on_images_held_out_of_train_without_reading_val(tmp_path):
    data = make_folder(tmp_path / "data", classes=3, train=50, val=2, size=8)
    shutil.rmtree(tmp_path / "data" / "val")  # --holdout must not need it
    out = tmp_path / "H"
    g = grid.main(["--profile", "small", "--data_path", data, "--output_dir", str(out), "--in_process",
                          "--small_epochs", "1", "--holdout", "10", "--rows", "aavae", "--pretrain_args", "--lr 1e-3",
                          "--no-label_evals"])
    held = json.loads((out / "holdout-data" / "holdout.json").read_text())["val"]
    assert sorted(map(len, held.values())) == [3, 3, 4]  # 10 of 150, per class in proportion
    for c, names in held.items():
        assert sorted(os.listdir(out / "holdout-data" / "val" / c)) == names
        assert not set(names) & set(os.listdir(out / "holdout-data" / "train" / c))
        assert len(names) + len(os.listdir(out / "holdout-data" / "train" / c)) == 50
    pretrain = [st.cmd for st in g.steps if st.kind == "pretrain"]
    assert len(pretrain) == 1 and "--lr 1e-3 --epochs 1" in shlex.join(pretrain[0])
    assert all(str(out / "holdout-data") in st.cmd for st in g.steps)
    table = (out / "table1.md").read_text()
    assert [r[0] for r in rows(table)[:2]] == ["aavae", "difference"] and "held out of train/" in table  # then the next table
    result = json.loads((out / "evals" / "linear-folder-aavae" / "result.json").read_text())
    assert result["test_images"] == 10
    with open(out / "curves.csv") as f:
        assert all(float(c["val_latent_snr"]) > 0 for c in csv.DictReader(f))
    # the same output directory with another hold-out is refused, and the flags need the small profile
    with pytest.raises(SystemExit, match="hold-out split of other images"):
        grid.main(["--profile", "small", "--data_path", data, "--output_dir", str(out), "--holdout", "9", "--dry_run"])
    with pytest.raises(SystemExit):
        grid.main(["--profile", "quick", "--data_path", data, "--holdout", "9", "--dry_run"])


def test_a_report_without_matplotlib_says_that_its_figures_were_not_drawn(tmp_path, capsys, monkeypatch):
    data = make_folder(tmp_path / "data", classes=2, train=4, val=1, size=8)
    argv = ["--profile", "quick", "--data_path", data, "--output_dir", str(tmp_path / "R"), "--report_only"]
    if importlib.util.find_spec("matplotlib"):  # the set-up's environment has none; a user's may
        grid.main(argv)
        assert "matplotlib" not in capsys.readouterr().out and (tmp_path / "R" / "figures.png").exists()
        (tmp_path / "R" / "figures.png").unlink()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an environment without it imports
    grid.main(argv)
    out = capsys.readouterr().out
    assert "matplotlib is not installed, so figures.png was not drawn: pip install matplotlib" in out
    assert (tmp_path / "R" / "table1.md").exists() and not (tmp_path / "R" / "figures.png").exists()


def test_run_json_keeps_the_commit_an_invocation_began_with_and_each_invocations_own_steps(tmp_path, monkeypatch):
    from util import misc
    args = argparse.Namespace(output_dir=str(tmp_path))
    head = {"git_commit": "a" * 40}  # what a checkout moves
    monkeypatch.setattr(misc, "provenance", lambda: dict(head))
    first = grid.record_run(args, ["--rows", "aavae"], 0.0, new=True)
    head["git_commit"] = "b" * 40  # the tree moved while a step ran
    grid.record_run(args, ["--rows", "aavae"], 60.0, [{"step": "runs/x", "minutes": 1.0, "exit": 0}], key=first)
    head["git_commit"] = "c" * 40
    second = grid.record_run(args, ["--rows", "vae"], 0.0, new=True)  # a new invocation: the commit it begins with
    runs = json.loads((tmp_path / "run.json").read_text())["invocations"]
    assert [r["provenance"]["git_commit"][0] for r in runs] == ["a", "c"]
    assert runs[0]["minutes"] == 1.0 and runs[0]["steps"][0]["step"] == "runs/x" and runs[1]["steps"] == []
    # two invocations side by side: the first finishing a step after the second began updates its own record
    grid.record_run(args, ["--rows", "aavae"], 120.0, [{"step": "runs/x", "minutes": 1.0, "exit": 0},
                                                       {"step": "evals/y", "minutes": 1.0, "exit": 0}], key=first)
    grid.record_run(args, ["--rows", "vae"], 60.0, [{"step": "runs/z", "minutes": 1.0, "exit": 0}], key=second)
    runs = json.loads((tmp_path / "run.json").read_text())["invocations"]
    assert [[st["step"] for st in r["steps"]] for r in runs] == [["runs/x", "evals/y"], ["runs/z"]]
    assert [r["command"].split()[-1] for r in runs] == ["aavae", "vae"] and first != second


def test_the_curves_put_the_gaussian_likelihood_on_the_ae_familys_mse_scale():
    import torch

    import aavae
    x, x_hat = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    for log_scale in (0.0, -2.5, 1.0):
        nll = -aavae.gaussian_log_likelihood(x_hat, x, torch.tensor(log_scale)).mean().item()
        assert report.pixel_mse(nll, log_scale, 3 * 8 * 8) == pytest.approx(aavae.reconstruction_loss(x_hat, x).item(), rel=1e-4)


def test_an_interrupted_holdout_build_is_redone_and_never_left_half_made(tmp_path):
    data = make_folder(tmp_path / "data", classes=2, train=6, val=1)
    out = tmp_path / "split"
    (tmp_path / "split.partial" / "train").mkdir(parents=True)  # what a build killed midway leaves
    assert grid.holdout_split(data, 4, str(out)) == str(out) and not (tmp_path / "split.partial").exists()
    assert sum(len(os.listdir(out / "val" / c)) for c in ("class0", "class1")) == 4
    (tmp_path / "mine").mkdir()  # a directory that is not a split is refused, not filled
    with pytest.raises(SystemExit, match="hold-out split of other images"):
        grid.holdout_split(data, 4, str(tmp_path / "mine"))


def test_the_small_profile_sets_the_aaes_uses_beside_aavae_on_the_same_labels_and_images(tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "SMALL_FINETUNE_EPOCHS", {0.01: 1, 0.1: 1})
    data = make_folder(tmp_path / "data", classes=2, train=70, val=5, size=8)
    out = tmp_path / "S"
    uses = ["aa-semi-aae-1percent", "cluster-aae-k10", "aa-cluster-aae-k10", "aa-supervised-aae", "aa-dimred-aae"]
    g = grid.main(["--profile", "small", "--data_path", data, "--output_dir", str(out), "--in_process",
                          "--small_epochs", "1", "--rows", ",".join(["aavae", *uses])])
    semi = next(st.cmd for st in g.steps if st.dir.endswith("runs/folder-aa-semi-aae-1percent"))
    assert semi[:3] == ["python", "-m", "methods.aae_uses"]
    assert semi[semi.index("--subset_file") + 1] == str(out / "label-subsets" / "1percent.txt")  # Table 2's own list
    text = (out / "table1.md").read_text()
    assert [r[0] for r in rows(text)[:1]] == ["aavae"]  # Table 1 keeps its rows
    table2 = {r[0]: r for r in rows(text.split("# Table 2 at the small budget")[1].split("# Cluster accuracy")[0])}
    head = table2["aa-semi-supervised AAE, its y head (in the fine-tuned columns)"]
    assert " ± " in head[1] and head[2] == "—" and head[3] == "—"  # 1 % measured; no 10 % run here
    clusters = {r[0]: r for r in rows(text.split("# Cluster accuracy")[1].split("# Paired differences, Table 2")[0])}
    assert " ± " in clusters["cluster-aae-k10: the AAE's y head"][1] and clusters["cluster-aae-k10: the AAE's y head"][4] == "10"
    own = {r[0]: r for r in rows(text.split("# The adversarial autoencoder's uses")[1].split("# Paired differences, the uses")[0])}
    assert set(own) == {*uses, "aavae"} and all(" ± " in r[1] and " ± " in r[2] for r in own.values())
    assert "5-NN top-1 in the 2-D map of W y + z (the code itself)" in own["aa-dimred-aae"][3]
    assert "5-NN top-1 in the 2-D map of mu (two principal components)" in own["aavae"][3]
    pairs = [(r[0], r[1]) for r in rows(text.split("# Paired differences, the uses against AAVAE")[1])]
    assert ("aa-semi-aae-1percent", "y head - AAVAE fine-tuned on the same labels") in pairs
    assert ("cluster-aae-k10", "majority - k-means on AAVAE (K = 2)") in pairs  # the classes: no K = 10 run of it here
    assert ("aa-dimred-aae", "5-NN in the map - AAVAE's map") in pairs
    assert ("aa-semi-aae-1percent", "y head - AAVAE's probe on the same labels") in pairs
    hits = lambda name: json.loads((out / "evals" / name / "result.json").read_text())["correct"]
    for row in uses:  # every use's encoder against AAVAE's, paired on the same val/ images
        for probe, label in (("linear", "probe - AAVAE's probe"), ("knn", "kNN - AAVAE's kNN")):
            d = report.paired_difference(hits(f"{probe}-folder-{row}"), hits(f"{probe}-folder-aavae"))
            assert [r[2] for r in rows(text.split("# Paired differences, the uses against AAVAE")[1])
                    if r[:2] == [row, label]] == [report.fmt_se(*d)]
    saved = json.loads((out / "results.json").read_text())
    assert [r["row"] for r in saved["uses"]] == [*uses, "aavae"]
    assert (out / "evals" / "grid-folder-aa-supervised-aae" / "grid.png").exists()
    lens = {tuple(r[:2]): r[2] for r in rows(text.split("# Paired differences, each augmented use against the plain one")[1])}
    assert set(lens) == {("aa-cluster-aae-k10", f"{d} - cluster-aae-k10's") for d in ("majority", "probe", "kNN", "NMI")}
    # (no Hungarian: 10 clusters of 2 classes)
    for name, key, label in (("head", "correct", "majority"), ("linear", "correct", "probe"), ("knn", "correct", "kNN")):
        a, b = (json.loads((out / "evals" / f"{name}-folder-{r}" / "result.json").read_text())[key] for r in ("aa-cluster-aae-k10", "cluster-aae-k10"))
        assert lens[("aa-cluster-aae-k10", f"{label} - cluster-aae-k10's")] == report.fmt_se(*report.paired_difference(a, b))
    assert saved["uses"][2]["paired"]["probe - cluster-aae-k10's"] == list(report.paired_difference(hits("linear-folder-aa-cluster-aae-k10"), hits("linear-folder-cluster-aae-k10")))


def test_the_split_profile_trains_every_table1_row_at_one_budget_and_clusters_each(tmp_path):
    with contextlib.redirect_stdout(io.StringIO()):
        g = grid.main(["--profile", "split", "--data_path", "D", "--output_dir", str(tmp_path), "--dry_run"])
    pretrain = [st.cmd for st in g.steps if st.kind == "pretrain"]
    flag = lambda cmd, name: cmd[cmd.index(name) + 1] if name in cmd else None
    assert len(pretrain) == len(grid.SMALL_ROWS) == 9  # every row of Table 1 but the untrained one
    for name in ("--epochs", "--batch_size", "--warmup_epochs", "--base_batch", "--encoder", "--lr"):
        assert len({flag(cmd, name) for cmd in pretrain}) == 1, name  # one budget, one recipe
    assert flag(pretrain[0], "--epochs") == str(grid.SPLIT_EPOCHS) and float(flag(pretrain[0], "--warmup_epochs")) == 0.4
    assert 45000 * grid.SPLIT_EPOCHS >= 135000  # the budget: at least three epochs of the 45,000 images
    rows = {c.row for c in g.cells if c.table == "cluster"}
    assert rows == set(grid.SPLIT_ALL) and not [c for c in g.cells if c.table == "table2"]
    assert {c.row for c in g.cells if c.table == "table1"} == set(grid.SPLIT_ALL)
    probes = [st.cmd for st in g.steps if st.kind == "eval" and flag(st.cmd, "--mode") in ("linear", "knn")]
    assert probes and not [cmd for cmd in probes if "--train_limit" in cmd]  # all 45,000 train, all of val/ scored
    with contextlib.redirect_stdout(io.StringIO()):
        g = grid.main(["--profile", "split", "--data_root", "DR", "--output_dir", str(tmp_path), "--dry_run"])
    assert {flag(st.cmd, "--data_path") for st in g.steps} == {os.path.join("DR", "cifar10-split")}  # made from CIFAR-10


def test_the_split_profile_reports_every_rows_clusters_without_table2(tmp_path):
    data = make_folder(tmp_path / "data", classes=2, train=20, val=5, size=8)
    with contextlib.redirect_stdout(io.StringIO()):
        grid.main(["--profile", "split", "--data_path", data, "--output_dir", str(tmp_path / "S"), "--in_process",
                   "--rows", "random init"])
    text = (tmp_path / "S" / "table1.md").read_text()
    assert "profile split" in text and "# Table 2" not in text
    clusters = rows(text.split("# Cluster accuracy")[1].split("# Paired differences")[0])
    assert [r[0] for r in clusters] == ["random init"] and clusters[0][4] == "2"  # K = the classes
    result = json.loads((tmp_path / "S" / "evals" / "cluster-random" / "result.json").read_text())
    assert clusters[0][1] == f"{result['majority_top1']:.2f} ± {report.binomial_se(result['majority_top1'], 10):.2f}"


def test_the_split_profiles_fine_tuning_choice_reads_train_alone_and_picks_by_its_rule(tmp_path, monkeypatch):
    """--finetune_choice: the three encoders, every recipe, fine-tuned on lists drawn from train/ less a hold-out and
    scored on that hold-out; val/ is gone by then, so nothing of the choice can have read it."""
    monkeypatch.setattr(grid, "FINETUNE_CHOICE_HOLDOUT", 20)
    monkeypatch.setattr(report, "FINETUNE_CHOICE_HOLDOUT", 20)
    monkeypatch.setattr(grid, "SPLIT_FINETUNE_EPOCHS", {0.01: 1, 0.1: 2})
    monkeypatch.setattr(report, "SPLIT_FINETUNE_EPOCHS", {0.01: 1, 0.1: 2})
    for module in (grid, report):  # two encoders and one recipe, for the suite's time (the rule: the next test)
        monkeypatch.setattr(module, "FINETUNE_CHOICE_ROWS", ["aavae", "simclr"])
    one = {"b0.1-h0.2": grid.FINETUNE_GRID["b0.1-h0.2"]}
    monkeypatch.setattr(grid, "FINETUNE_GRID", one)
    monkeypatch.setattr(report, "FINETUNE_GRID", one)
    data = make_folder(tmp_path / "data", classes=2, train=110, val=5, size=8)
    out = tmp_path / "S"
    base = ["--profile", "split", "--data_path", data, "--output_dir", str(out), "--in_process", "--small_epochs", "1"]
    with contextlib.redirect_stdout(io.StringIO()):
        for st in grid.main(base + ["--finetune_choice", "--dry_run"]).steps:  # the rows' pretraining first, on train/
            if st.kind == "pretrain":  # (its monitor reads val/, the choice does not)
                os.makedirs(st.dir, exist_ok=True)
                assert grid.execute(st.cmd, io.StringIO(), in_process=True) == 0
                open(os.path.join(st.dir, st.marker), "w").close()
        shutil.rmtree(os.path.join(data, "val"))
        g = grid.main(base + ["--finetune_choice"])
    assert [st.kind for st in g.steps].count("pretrain") == 2 and {c.table for c in g.cells} == {"choice"}
    held = json.loads((out / "finetune-choice" / "holdout-data" / "holdout.json").read_text())["val"]
    assert sum(map(len, held.values())) == 20
    lists = {p: (out / "finetune-choice" / "label-subsets" / f"{p}.txt").read_text().split() for p in ("1percent", "10percent")}
    assert len(lists["1percent"]) == 2 and len(lists["10percent"]) == 20  # of the 200 left in train/
    assert not set(lists["10percent"]) & {f"{c}/{f}" for c, names in held.items() for f in names}
    choice = [st for st in g.steps if "/choice-" in st.dir]
    assert len(choice) == len(grid.FINETUNE_CHOICE_ROWS) * 2 * (len(grid.FINETUNE_GRID) + 1)
    for st in choice:
        assert st.cmd[st.cmd.index("--data_path") + 1] == str(out / "finetune-choice" / "holdout-data")
        r = json.loads(open(os.path.join(st.dir, "result.json")).read())
        assert r["test_images"] == 20 and r["train_images"] in (2, 20)
    saved = json.loads((out / "finetune-choice" / "choice.json").read_text())
    tuned = [r for r in saved["records"] if r["recipe"] != "probe"]
    assert {(r["fraction"], r["recipe"]) for r in tuned} == {(p, k) for p in ("1percent", "10percent") for k in one}
    for pct in ("1percent", "10percent"):  # the rule: the highest mean among the stable recipes
        mine = [r for r in tuned if r["fraction"] == pct]
        for r in mine:
            assert r["mean"] == pytest.approx(sum(r["top1"].values()) / 2) and set(r["top1"]) == {"aavae", "simclr"}
        if any(r["stable"] for r in mine):
            assert saved["chosen"][pct] == max((r for r in mine if r["stable"]), key=lambda r: r["mean"])["recipe"]
    assert "# Fine-tuning's recipe, chosen on images held out of train/" in (out / "finetune-choice" / "choice.md").read_text()
    assert not (out / "table1.md").exists()  # the profile's own tables are left as they are


def test_the_fine_tuning_rule_passes_over_an_unstable_recipe_however_well_it_scores(tmp_path):
    args = argparse.Namespace(output_dir=str(tmp_path), rows=grid.FINETUNE_CHOICE_ROWS)
    g = grid.Grid(argparse.Namespace(profile="split", data_path="D", output_dir=str(tmp_path), nproc=1, small_epochs=1))
    scores = {"b1-h1": 60.0, "b1-h0.2": 55.0, "b0.1-h1": 50.0, "b0.1-h0.2": 40.0, "probe": 45.0}
    for row in grid.FINETUNE_CHOICE_ROWS:
        for pct in grid.LABEL_FRACTIONS.values():
            for recipe, top1 in scores.items():
                d = tmp_path / f"{row}-{pct}-{recipe}"
                d.mkdir()
                (d / "result.json").write_text(json.dumps({"top1": top1, "train_images": 4, "test_images": 9, "epochs": 9}))
                losses = [2.3, 2.0, 1.0] if recipe != "b1-h1" or row != "simclr" else [2.3, 2.4, 0.5]  # one log climbs
                (d / "log.jsonl").write_text("".join(json.dumps({"epoch": i, "loss": v}) + "\n" for i, v in enumerate(losses)))
                g.cell("choice", row, (pct, recipe), str(d))
    lines, rec = report.report_choice(g, args)
    assert rec["finetune_choice"]["chosen"] == {"1percent": "b1-h0.2", "10percent": "b1-h0.2"}
    unstable = [r for r in rec["finetune_choice"]["records"] if r["stable"] is False]
    assert {r["recipe"] for r in unstable} == {"b1-h1"}
    rises = {r["recipe"]: r["largest_rise"] for r in rec["finetune_choice"]["records"]}  # simclr's 2.4 over its 2.3
    assert rises["b1-h1"] == pytest.approx(0.1) and rises["b1-h0.2"] == 0 and rises["probe"] is None
    assert grid.stable([{"loss": 2.3}, {"loss": 2.3}, {"loss": 0.1}]) and not grid.stable([])


def test_the_split_profiles_table2_waits_for_its_fine_tuning_choice(tmp_path, monkeypatch, capsys):
    run = lambda *extra: grid.main(["--profile", "split", "--data_path", "D", "--output_dir", str(tmp_path), "--dry_run", *extra])
    monkeypatch.setattr(grid, "SPLIT_FINETUNE", None)
    for extra, says in ((["--label_evals"], "waits for its fine-tuning recipe"), (["--finetune_choice", "--rows", "aavae"],
                        "no --rows with it")):
        with pytest.raises(SystemExit):
            run(*extra)
        assert says in capsys.readouterr().err
    with pytest.raises(SystemExit):
        grid.main(["--profile", "small", "--finetune_choice", "--dry_run"])
    assert "only with --profile split" in capsys.readouterr().err
    monkeypatch.setattr(grid, "SPLIT_FINETUNE", {0.01: "b0.1-h1", 0.1: "b1-h0.2"})  # once chosen: every row, one recipe
    with contextlib.redirect_stdout(io.StringIO()):
        g = run("--label_evals")
    tuned = [st.cmd for st in g.steps if "/finetune-" in st.dir]
    assert len(tuned) == 2 * len(grid.LABEL_ROWS)
    for frac, pct in grid.LABEL_FRACTIONS.items():
        mine = [shlex.join(c) for c in tuned if f"finetune-{pct}-" in c[-1]]
        assert len(mine) == len(grid.LABEL_ROWS)
        assert all(shlex.join(grid.finetune_flags(frac, grid.SPLIT_FINETUNE[frac])) in c for c in mine)
