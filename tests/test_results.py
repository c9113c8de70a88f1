"""The tables of README.md and the results READMEs, row by row, against the files they came from: every cell
(counts, commits and labels included) rebuilt from results.json, run.json, args.json and each evaluation's
result.json, as experiments/report.py writes them. The figures of the prose, and the orderings it states, are
tests/test_figures.py's."""
import glob
import json
import os
import re

import pytest

from experiments import grid, report
import linear_eval
from conftest import ROOT

RESULTS = os.path.join(ROOT, "results")


def text(*path):
    with open(os.path.join(ROOT, *path)) as f:
        return f.read()


def data(*path):
    return json.loads(text(*path))


def table_after(markdown, header):
    """The rows (lists of cells) of the markdown table whose header line starts with `header`."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def commit(*path):
    return data(*path)["provenance"]["git_commit"][:7]


def commits(cell):
    """The commits a table cell names (7 hex digits)."""
    return set(re.findall(r"\b[0-9a-f]{7}\b", cell))


# ----------------------------------------------------------------------------------------------------
# results/small-cpu-30: Table 1 at 30 epochs, quoted in README.md and in the folder's README


SMALL30 = ("results", "small-cpu-30")
PAGES30 = [(*SMALL30, "README.md"), (*SMALL30, "table1.md")]
SPLIT = ("results", "split-cpu-4")
PAGES_SPLIT = [("README.md",), (*SPLIT, "README.md"), (*SPLIT, "table1.md")]


@pytest.fixture(scope="module")
def r30():
    return data(*SMALL30, "results.json")


def expected_table1(rows):
    """Table 1's rows as report_small writes them, from results.json alone."""
    out = []
    for r in rows:
        units = f"{r['active_units']} of {r['active_units_of']}" if r["active_units"] is not None else "—"
        out.append([grid.SMALL_LABELS.get(r["row"], r["row"]), report.fmt_se(r["linear_top1"], r["linear_se"]),
                    report.fmt_se(r["knn_top1"], r["knn_se"]), units, report.fmt(r["val_bpd"], 4),
                    report.fmt(r["paper_cifar10"])])
    return out


@pytest.mark.parametrize("page", PAGES30, ids=lambda p: "/".join(p))
def test_table1_at_30_epochs_is_its_results_json_wherever_it_is_quoted(page, r30):
    assert table_after(text(*page), "| encoder | linear top-1") == expected_table1(r30["rows"])


@pytest.mark.parametrize("page", PAGES_SPLIT, ids=lambda p: "/".join(p))
def test_table1_on_the_split_is_its_results_json_wherever_it_is_quoted(page):
    assert table_after(text(*page), "| encoder | linear top-1") == expected_table1(data(*SPLIT, "results.json")["rows"])


def test_the_commits_small_cpu_30_names_are_its_runs_and_evaluations():
    # each row's pretraining commits: its args.json's and those of the run.json parts that trained it; its evaluations':
    # their result.json's; every one clean
    invocations = data(*SMALL30, "run.json")["invocations"]
    table = table_after(text(*SMALL30, "README.md"), "| row | pretraining at |")
    assert sorted(r for cells in table for r in cells[0].split(", ")) == sorted(r["row"] for r in data(*SMALL30, "results.json")["rows"])
    for names, trained, evaluated, _ in table:
        for row in names.split(", "):
            run = "random" if row == "random init" else f"folder-{row}"
            evals = {commit(*SMALL30, "evals", f"{p}-{run}", "result.json") for p in ("linear", "knn")}
            assert evals == commits(evaluated), row
            if row == "random init":
                assert trained == "—"
                continue
            parts = {inv["provenance"]["git_commit"][:7] for inv in invocations
                     if any(st["step"] == f"runs/{run}" for st in inv.get("steps", []))}
            assert commits(trained) == {commit(*SMALL30, "runs", run, "args.json")} | parts, row
            assert not data(*SMALL30, "runs", run, "args.json")["provenance"]["git_dirty"]
    # "native_bf16": true in every entry of run.json but the first, written before run.json recorded it
    assert "native_bf16" not in invocations[0] and all(inv["native_bf16"] for inv in invocations[1:])


# ----------------------------------------------------------------------------------------------------
# results/small-cpu (10 epochs) and results/small-cpu-holdout


def test_table1_at_10_epochs_is_its_results_json():
    rows = data("results", "small-cpu", "results.json")
    quoted = table_after(text("results", "small-cpu", "README.md"), "| encoder | linear top-1")
    assert len(quoted) == len(rows)
    for cells, r in zip(quoted, rows):
        label = grid.SMALL_LABELS.get(r["row"], r["row"])
        assert cells[0] in (label, r["row"]) and cells[1] == report.fmt_se(r["linear_top1"], r["linear_se"])
        assert cells[2] == report.fmt(r["knn_top1"]) and cells[3] == report.fmt(r["active_units"])
        assert cells[4] == report.fmt(r["val_bpd"], 4) and cells[5] == report.fmt(r["paper_cifar10"])


@pytest.mark.parametrize("config, rows", [("base", ["aaae", "aavae", "random init"]), ("lr1e-3", ["aaae", "aavae"]),
                                          ("logscale-3", ["aavae"]), ("batch64", ["aaae", "aavae"])])
def test_the_holdout_studys_table_is_its_results_json(config, rows):
    quoted = text("results", "small-cpu-holdout", "README.md")
    table = table_after(quoted, "| configuration | encoder | final probe")
    measured = {r["row"]: r for r in data("results", "small-cpu-holdout", config, "results.json")}
    for row in rows:
        r = measured[row]
        probe = f"{r['linear_top1']:.1f} ± {r['linear_se']:.1f}"
        assert any(c[1] == row and c[2].startswith(probe) and c[3] == f"{r['knn_top1']:.1f}" for c in table), (config, row)


# ----------------------------------------------------------------------------------------------------
# results/small-cpu-30-labels: Table 2 at the small budget and the clusters, and the fine-tuning choice


LABELS = ("results", "small-cpu-30-labels")


def test_table2_and_the_clusters_are_their_results_json_wherever_they_are_quoted():
    r = data(*LABELS, "results.json")
    table2 = [[x["label"]] + [report.fmt_se(x[c]["top1"], x[c]["se"]) for c in report.TABLE2_COLUMNS]
              for x in r["table2"]]  # the semi-supervised AAE's y head too, in the fine-tuned columns
    clusters = [[x["label"], report.fmt_se(*x["majority_top1"]),
                 report.fmt_se(*x["hungarian_top1"]), report.fmt_se(*x["nmi"], digits=3), str(x["clusters"])]
                for x in r["clusters"]]
    assert table2 and clusters
    for page in ("table1.md", "README.md"):
        quoted = text(*LABELS, page)
        assert table_after(quoted, "| encoder | fine-tuned, 1 %") == table2, page
        assert table_after(quoted, "| encoder | majority label top-1") == clusters, page
    # every fine-tuned and probed row learned from the same images: the lists' images, as many as each evaluation read
    lists = {pct: text(*LABELS, "label-subsets", f"{pct}.txt").split() for pct in ("1percent", "10percent")}
    for x in (x for x in r["table2"] if not x.get("y_head")):
        for c in report.TABLE2_COLUMNS:
            assert x[c]["train_images"] == len(lists[c.split()[1]]), (x["row"], c)
    # drawn per class: as many of each class as the page says, the 1 % list evenly
    per_class = lambda names: [sum(n.startswith(c + "/") for n in names) for c in {n.split("/")[0] for n in names}]
    assert len(set(per_class(lists["1percent"]))) == 1 and max(per_class(lists["10percent"])) - min(per_class(lists["10percent"])) <= 5


def test_the_fine_tuning_choice_is_its_evaluations():
    quoted = table_after(text(*LABELS, "README.md"), "| encoder | labelled images | epochs")
    held = data(*LABELS, "finetune-choice", "holdout.json")
    lists = {pct: text(*LABELS, "finetune-choice", "label-subsets", f"{pct}.txt").split() for pct in ("1percent", "10percent")}
    assert len(quoted) >= 10
    for encoder, images, epochs, backbone, head, top1 in quoted:
        name = {"fine-tuned": "finetune", "probe": "linear"}[encoder.split(", ")[1]]
        pct = next(p for p, names in lists.items() if len(names) == int(images))
        frac = next(k for k, v in grid.LABEL_FRACTIONS.items() if v == pct)
        who = encoder.split(", ")[0].replace("random init", "random")
        suffix = f"-e{epochs}" + ("-lr10th" if name == "finetune" and float(backbone) < linear_eval.FINETUNE_LR[frac][0] else "") \
            if name == "finetune" else ""
        r = data(*LABELS, "finetune-choice", "evals", f"{name}-{pct}-{who}{suffix}", "result.json")
        assert f"{r['top1']:.1f}" == top1.split(" ")[0] and r["train_images"] == int(images), (encoder, images, epochs)
        assert r["test_images"] == sum(map(len, held["val"].values()))
        if name == "finetune":  # the lrs the table names are the ones the evaluation ran with
            assert (f"{r['backbone_lr']:g}", f"{r['head_lr']:g}") == (backbone, head) and r["epochs"] == int(epochs)


# ----------------------------------------------------------------------------------------------------
# results/aae-uses-choice: the adversarial weight, then y's weight alone, then y's gradient past the softmax


CHOICE = ("results", "aae-uses-choice")
RUNS = {"semi": "aa-semi-aae-1percent", "cluster": "aa-cluster-aae-k16"}


def test_the_aae_uses_adversarial_weight_choice_is_its_evaluations():
    ev = lambda w, mode, use: data(*CHOICE, w, "evals", f"{mode}-folder-{RUNS[use]}", "result.json")
    weight = {w: data(*CHOICE, w, "runs", f"folder-{RUNS['semi']}", "args.json")["adv_weight"] for w in ("w1", "w0.1")}
    quoted = table_after(text(*CHOICE, "README.md"), "| `--adv_weight` |")
    assert [r[0] for r in quoted] == [f"{weight[w]:g}" for w in ("w1", "w0.1")]
    for (w, semi, cluster, nmi, used, *features), study in zip(quoted, ("w1", "w0.1")):
        assert semi == f"{ev(study, 'head', 'semi')['top1']:.1f}"
        c = ev(study, "head", "cluster")
        assert cluster == f"{c['majority_top1']:.1f}" and nmi == f"{c['nmi']:.3f}" and used == f"{c['clusters_used']} of {c['clusters']}"
        assert features == [f"{ev(study, m, u)['top1']:.1f}" for u in ("semi", "cluster") for m in ("linear", "knn")]
        assert ev(study, "head", "semi")["test_images"] == c["test_images"]
    assert data(*CHOICE, "w1", "holdout.json") == data(*CHOICE, "w0.1", "holdout.json")  # one split for both


def test_the_study_of_ys_adversarial_weight_is_its_evaluations():
    part = text(*CHOICE, "README.md").split("## The categorical adversary")[1]
    ev = lambda study, mode: data(*CHOICE, study, "evals", f"{mode}-folder-{RUNS['cluster']}", "result.json")
    cells = lambda study: [f"{ev(study, 'head')['clusters_used']} of {ev(study, 'head')['clusters']}",
                           f"{ev(study, 'head')['majority_top1']:.1f}", f"{ev(study, 'head')['nmi']:.3f}",
                           f"{ev(study, 'linear')['top1']:.1f}", f"{ev(study, 'knn')['top1']:.1f}"]
    args = lambda study: data(*CHOICE, study, "runs", f"folder-{RUNS['cluster']}", "args.json")
    split = lambda study: {k: v for k, v in data(*CHOICE, study, "holdout.json").items() if k != "source"}  # where the tree was
    quoted = table_after(part, "| `--adv_weight_y` |")
    assert [r[0] for r in quoted] == [f"{args(s)['adv_weight_y']:g}" for s in ("y0.1", "y1", "y10")]
    for (w, *row), study in zip(quoted, ("y0.1", "y1", "y10")):
        assert row == cells(study), study
        # z's weight stays the first study's winner, the runs as long as its, on its split
        assert args(study)["adv_weight"] == args("w0.1")["adv_weight"] and args(study)["epochs"] == args("w0.1")["epochs"]
        assert split(study) == split("w0.1")
    rows = dict((r[0], r[1:]) for r in table_after(part, "| y's fooling gradient |"))
    assert rows["through the softmax (`y0.1/`)"] == cells("y0.1") and rows["past it (`st/`)"] == cells("st")
    assert args("st")["y_straight_through"] is True and args("st")["adv_weight_y"] in (None, args("y0.1")["adv_weight_y"])
    assert split("st") == split("w0.1")


# ----------------------------------------------------------------------------------------------------
# results/small-cpu-30-labels: the adversarial autoencoder's uses


def test_the_aae_uses_at_the_small_budget_are_their_files_wherever_they_are_quoted():
    saved, readme = data(*LABELS, "results.json"), text(*LABELS, "README.md")
    uses = {u["row"]: u for u in saved["uses"]}
    assert "aa-semi-aae-1percent" in uses and "aavae" in uses  # what has run, with AAVAE's map beside it
    table = table_after(readme, "| run | linear top-1")
    assert table == table_after(text(*LABELS, "table1.md"), "| run | linear top-1")
    assert [r[0] for r in table] == list(uses)
    for row, lin, knn, own in table:
        assert (lin, knn) == (report.fmt_se(*uses[row]["linear"]), report.fmt_se(*uses[row]["knn"]))
        key = {"head": "majority_top1" if "cluster" in row else "top1", "map": "top1", "grid": "recon_own_label"}[uses[row]["own"]]
        got = data(*LABELS, "evals", f"{uses[row]['own']}-folder-{row}", "result.json")[key]
        assert got == uses[row][key] and f"{got:.{4 if key == 'recon_own_label' else 2}f}" in own, row
        if uses[row]["own"] == "head" and "semi" in row:  # the y head learned from Table 2's list, scored on val/
            r = data(*LABELS, "evals", f"head-folder-{row}", "result.json")
            assert os.path.basename(r["subset_file"]) == row.rsplit("-", 1)[1] + ".txt"
            assert r["test_images"] == data(*LABELS, "evals", "linear-folder-aavae", "result.json")["test_images"]
    pairs = table_after(readme, "| run | difference |")
    assert pairs == table_after(text(*LABELS, "table1.md"), "| run | difference |")
    lens = table_after(readme, "| run | difference with the plain run |")  # each augmented use against its plain twin
    assert lens == table_after(text(*LABELS, "table1.md"), "| run | difference with the plain run |")
    assert all(label.endswith(f" - {row.removeprefix('aa-')}'s") for row, label, _ in lens) and lens
    pairs += lens
    assert sorted((row, label) for row, label, _ in pairs) == sorted((row, label) for row, u in uses.items()
                                                                     for label in u.get("paired", {}))
    for row, label, value in pairs:
        assert value == report.fmt_se(*uses[row]["paired"][label], digits=3 if "NMI" in label else 2), (row, label)
    # each run's commit (args.json; its evaluations' result.json) and its pretraining minutes (run.json's last part)
    minutes = lambda row: [st["minutes"] for inv in data(*LABELS, "run.json")["invocations"] for st in inv["steps"]
                           if st["step"] == f"runs/folder-{row}"][-1]
    when = table_after(readme, "| run | trained at |")
    assert sorted(r[0] for r in when) == sorted(set(uses) - {"aavae"})
    for row, trained, evaluated, mins, _ in when:
        assert trained == commit(*LABELS, "runs", f"folder-{row}", "args.json") and f"{minutes(row):.1f}" == mins, row
        evals = {commit(*LABELS, "evals", d, "result.json") for d in os.listdir(os.path.join(RESULTS, *LABELS[1:], "evals"))
                 if d.endswith(f"-folder-{row}")}
        first = next(iter(evals)) if len(evals) == 1 else trained  # where two, the run's own first, then the rerun
        assert evals == commits(evaluated) and evaluated.startswith(first), row
    # the runs: 30 epochs each, at the weight the choice made, the semi-supervised ones on Table 2's own lists
    for row in uses:
        if row == "aavae":
            continue
        args = data(*LABELS, "runs", f"folder-{row}", "args.json")
        assert args["epochs"] == data(*LABELS, "runs", "folder-aavae", "args.json")["epochs"]
        assert args["adv_weight"] == data(*CHOICE, "w0.1", "runs", f"folder-{RUNS['semi']}", "args.json")["adv_weight"]


def test_the_split_profiles_rows_share_one_budget_and_one_precision():
    # every trained row of results/split-cpu-4: the same recipe, precision and images seen (its args.json), every step
    # of that budget taken (its log), the same machine kind (run.json), and every evaluation on all of val/
    folder = os.path.join(ROOT, "results", "split-cpu-4")
    runs = sorted(glob.glob(os.path.join(folder, "runs", "*", "args.json")))
    args = [json.load(open(p)) for p in runs]
    assert len(args) >= 2
    for key in ("amp", "epochs", "batch_size", "base_batch", "warmup_epochs", "lr", "encoder", "latent_dim",
                "data_path", "image_size", "in_memory"):
        assert len({json.dumps(a[key]) for a in args}) == 1, key
    assert len({a["decoder"] for a in args if a["method"] not in ("simclr", "supervised")}) == 1  # the controls have none
    for p in runs:
        steps = [row for row in map(json.loads, open(os.path.join(os.path.dirname(p), "log.jsonl"))) if "loss" in row]
        assert steps[-1]["epoch"] == args[0]["epochs"] and steps[-1]["step"] == args[0]["epochs"] * (45000 // 128)
    invocations = json.load(open(os.path.join(folder, "run.json")))["invocations"]
    assert len({(inv["machine"], inv["native_bf16"]) for inv in invocations}) == 1 and args[0]["amp"] is True
    for result in glob.glob(os.path.join(folder, "evals", "*", "result.json")):
        if os.path.basename(os.path.dirname(result)).startswith("choice-"):
            continue  # the fine-tuning choice scores images held out of train/ (the next tests)
        r = json.load(open(result))
        assert r.get("test_images", 5000) == 5000 and len(r.get("correct", [0] * 5000)) == 5000, result


def test_the_small_budgets_fine_tuning_logs_climb_as_its_readme_says_and_the_split_profiles_may_not():
    """results/small-cpu-30-labels, made with the old head: every fine-tuning log climbs above its first epoch's mean loss,
    tenfold or more at 1 %. Every fine-tuning log of results/split-cpu-4 (the new head, its recipe chosen on images held
    out of train/) must not: no epoch's mean loss above the first's."""
    old = glob.glob(os.path.join(ROOT, *LABELS, "evals", "finetune-*", "log.jsonl"))
    assert len(old) == 16
    for path in old:
        losses = [json.loads(line)["loss"] for line in open(path)]
        assert max(losses) > losses[0] and ("1percent" not in path or max(losses) >= 10 * losses[0]), path
    new = glob.glob(os.path.join(ROOT, "results", "split-cpu-4", "evals", "finetune-*", "log.jsonl"))  # Table 2's rows
    for path in new:
        losses = [json.loads(line) for line in open(path)]
        assert grid.stable(losses) and losses[-1]["loss"] < losses[0]["loss"], path


def flag_values(argv):
    """A command's flags as {flag: value} (True for a switch), the last of a repeated flag kept, as argparse does."""
    out, k = {}, 0
    while k < len(argv):
        takes = k + 1 < len(argv) and not argv[k + 1].startswith("--")
        out[argv[k]] = argv[k + 1] if takes else True
        k += 2 if takes else 1
    return out


def test_the_split_profiles_fine_tuning_recipe_is_the_choice_made_on_images_held_out_of_train():
    choice = data(*SPLIT, "finetune-choice", "choice.json")
    held = data(*SPLIT, "finetune-choice", "holdout.json")
    held_names = {f"{c}/{f}" for c, files in held["val"].items() for f in files}
    lists = {pct: text(*SPLIT, "finetune-choice", "label-subsets", f"{pct}.txt").split() for pct in grid.LABEL_FRACTIONS.values()}
    assert len(held_names) == choice["holdout"] == grid.FINETUNE_CHOICE_HOLDOUT
    for frac, pct in grid.LABEL_FRACTIONS.items():  # labelled images of train/ less the hold-out, never the hold-out
        assert not held_names & set(lists[pct]) and len(lists[pct]) == round(frac * (45000 - len(held_names)))
    assert len(choice["records"]) == len(grid.LABEL_FRACTIONS) * (len(grid.FINETUNE_GRID) + 1)
    for rec in choice["records"]:
        frac = next(k for k, v in grid.LABEL_FRACTIONS.items() if v == rec["fraction"])
        stable = []
        for row, top1 in rec["top1"].items():
            tuned = rec["recipe"] != "probe"
            name = f"choice-finetune-{rec['fraction']}-{row}-{rec['recipe']}" if tuned else f"choice-linear-{rec['fraction']}-{row}"
            r = data(*SPLIT, "evals", name, "result.json")
            assert r["top1"] == top1 and r["test_images"] == len(held_names) and r["train_images"] == len(lists[rec["fraction"]])
            if tuned:  # the lrs and epochs the recipe names are the ones the evaluation ran with
                flags = flag_values(grid.finetune_flags(frac, rec["recipe"]))
                assert (f"{r['backbone_lr']:g}", f"{r['head_lr']:g}", str(r["epochs"])) == \
                    (flags["--lr"], flags["--head_lr"], flags["--epochs"])
                stable.append(grid.stable([json.loads(x) for x in text(*SPLIT, "evals", name, "log.jsonl").splitlines()]))
        assert rec["stable"] == (all(stable) if rec["recipe"] != "probe" else None)
        assert rec["mean"] == pytest.approx(sum(rec["top1"].values()) / len(rec["top1"]))
    for frac, pct in grid.LABEL_FRACTIONS.items():  # the rule, and the profile's setting is its outcome
        ok = [r for r in choice["records"] if r["fraction"] == pct and r["recipe"] != "probe" and r["stable"]]
        assert choice["chosen"][pct] == max(ok, key=lambda r: r["mean"])["recipe"] == grid.SPLIT_FINETUNE[frac]


def test_the_mnist_profiles_aae_settings_are_the_choice_made_on_images_held_out_of_train():
    """results/mnist-aae-choice: every run read only train's own images (the hold-out, or the rule's cut of it), for the
    same epochs and seed; the rule (report.mnist_aae_choice) picks a setting whose flags the mnist profile already has."""
    folder = os.path.join(ROOT, "results", "mnist-aae-choice")
    scores, winner = report.mnist_aae_choice(folder)
    assert winner is not None and all(v is None or v >= scores[winner] for v in scores.values())
    runs = glob.glob(os.path.join(folder, "*", "runs", "*", "args.json"))
    diagnostic = [p for p in runs if p.split(os.sep)[-4] not in grid.MNIST_AAE_CHOICE]  # after the choice, in no rule
    assert len(runs) - len(diagnostic) == 2 * len(grid.MNIST_AAE_CHOICE) - 1  # lr0.003's clustering row never started
    assert [p.split(os.sep)[-4:-2] for p in diagnostic] == [["lr0.0003-g1", "runs"]]
    a = json.load(open(diagnostic[0]))  # the regularisation phase at the reconstruction's lr
    assert a["gen_lr"] == a["disc_lr"] == a["lr"] == 0.0003 and a["method"] == "cluster_aae"
    assert os.path.basename(a["data_path"]) == "rule-data" and a["epochs"] == 10 and a["seed"] == 0
    for p in (p for p in runs if p not in diagnostic):
        a = json.load(open(p))
        setting = p.split(os.sep)[-4]
        assert os.path.basename(a["data_path"]) in ("holdout-data", "rule-data") and a["epochs"] == 10 and a["seed"] == 0
        assert flag_values(grid.MNIST_AAE_CHOICE[setting]).items() <= {f"--{k}": str(v) if v is not True else True
                                                                       for k, v in a.items()}.items()
    assert flag_values(grid.MNIST_AAE + grid.MNIST_AAE_CHOICE[winner]) == flag_values(grid.MNIST_AAE)
