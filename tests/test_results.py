"""Numbers that cannot drift: every figure README.md and the results READMEs quote, checked against the
results.json, run.json and args.json it came from. A table row is rebuilt from the JSON; a figure with a
standard error in the prose must be one of the JSON's; ranges, orderings and minutes are recomputed."""
import json
import os
import re

import pytest

from methods import aae_uses
from experiments import grid, report
import linear_eval
from conftest import ROOT

RESULTS = os.path.join(ROOT, "results")
AUTOENCODERS = ["ae", "aaae", "aaae-authors", "vae", "aavae", "aaae-s1", "aavae-s1"]
CONTROLS = ["supervised", "simclr"]


def text(*path):
    with open(os.path.join(ROOT, *path)) as f:
        return f.read()


def data(*path):
    return json.loads(text(*path))


def prose(markdown):
    """The lines of a page that are neither table rows nor code: what a reader takes as claims."""
    return " ".join(line.strip() for line in markdown.splitlines() if not line.startswith(("|", "    ")))


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


# ----------------------------------------------------------------------------------------------------
# results/small-cpu-30: Table 1 at 30 epochs, quoted in README.md and in the folder's README


SMALL30 = ("results", "small-cpu-30")
PAGES30 = [("README.md",), (*SMALL30, "README.md"), (*SMALL30, "table1.md")]


@pytest.fixture(scope="module")
def r30():
    r = data(*SMALL30, "results.json")
    r["top1"] = {row["row"]: row["linear_top1"] for row in r["rows"]}
    r["knn"] = {row["row"]: row["knn_top1"] for row in r["rows"]}
    return r


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


def quoted_pairs(markdown):
    """Every 'a ± b' of a page's prose, as the strings it prints."""
    return re.findall(r"([+-]?\d+\.\d+) ± (\d+\.\d+)", prose(markdown))


def json_pairs(r):
    """Every (value, standard error) results.json holds: row accuracies, paired differences, seed spreads."""
    pairs = [(row[f"{p}_top1"], row[f"{p}_se"]) for row in r["rows"] for p in ("linear", "knn")]
    for d in r["paired_differences"]:
        pairs += [tuple(d["linear"]), tuple(d["knn"])] + [tuple(s) for s in (d["seed1"] or [])]
    for s in r["seed_to_seed"]:
        pairs += [tuple(s[p]["seed1_minus_seed0"]) for p in ("linear", "knn")]
    return pairs


def matches(value, se, pairs):
    """Whether 'value ± se', as printed (its own number of decimals), rounds one of pairs."""
    digits = len(value.split(".")[1])
    return any(round(v, digits) == float(value) and round(s, len(se.split(".")[1])) == float(se) for v, s in pairs)


@pytest.mark.parametrize("page", PAGES30[:2], ids=lambda p: "/".join(p))
def test_every_figure_with_a_standard_error_in_the_prose_is_in_results_json(page, r30):
    labels = data("results", "small-cpu-30-labels", "results.json")  # the README quotes Table 2's differences too
    pairs = json_pairs(r30) + [tuple(d[c]) for d in labels["label_paired_differences"]
                               for c in report.TABLE2_COLUMNS + ["majority", "hungarian", "nmi"]]
    pairs += [tuple(d[pct]) for d in labels["finetune_over_probe"] for pct in grid.LABEL_FRACTIONS.values()]
    pairs += uses_pairs(labels)
    quoted = quoted_pairs(text(*page))
    assert len(quoted) >= 10
    wrong = [f"{v} ± {s}" for v, s in quoted if not matches(v, s, pairs)]
    assert not wrong, f"{'/'.join(page)} quotes {wrong}, which results.json does not hold"


def span(values, digits=1):
    values = list(values)
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def run_log(*folder):
    """A run's log.jsonl, a dict a line."""
    return [json.loads(line) for line in text(*folder, "log.jsonl").splitlines()]


def loss_span(log, key, digits=2):
    """The range of a training line's key from step 100 on, as the prose prints it ('0.03-0.19')."""
    return span((x[key] for x in log if "loss" in x and x["step"] >= 100), digits)


@pytest.mark.parametrize("page", PAGES30[:2], ids=lambda p: "/".join(p))
def test_the_ranges_the_prose_quotes_are_the_rows(page, r30):
    words = prose(text(*page))
    ranges = re.findall(r"autoencoders (?:reach )?(\d+\.\d-\d+\.\d)", words)
    assert ranges and ranges[0] == span(r30["top1"][r] for r in AUTOENCODERS), ranges
    lowest = sorted(r30["top1"][r] for r in ("ae", "vae", "aaae-authors"))
    top = sorted(r30["top1"][r] for r in ("aavae", "aaae", "aavae-s1", "aaae-s1"))
    # AE, VAE and the authors' AAAE below AAVAE and AAAE of either seed: the two spans, in that order
    assert re.search(re.escape(span(lowest)) + r"\D{0,60}" + re.escape(span(top)), words)
    if page == ("README.md",):
        knn = [r30["knn"][r] for r in AUTOENCODERS + ["simclr"] if r != "simclr"]
        assert f"they reach {span(knn)} against its {r30['knn']['random init']:.1f}" in words


def paired(r, a, b, probe="linear", seed1=False):
    d = next(d for d in r["paired_differences"] if (d["a"], d["b"]) == (a, b))
    return d["seed1"][0 if probe == "linear" else 1] if seed1 else d[probe]


def test_the_orderings_and_differences_the_prose_asserts_hold(r30):
    top1 = r30["top1"]
    readme, folder = prose(text("README.md")), prose(text(*SMALL30, "README.md"))
    # "AAVAE stands between the VAE and SimCLR", both seeds
    assert "between the VAE and SimCLR" in readme and "between the VAE and SimCLR" in folder
    assert top1["vae"] < min(top1["aavae"], top1["aavae-s1"]) <= max(top1["aavae"], top1["aavae-s1"]) < top1["simclr"]
    # "nearer the VAE": closer to the VAE than to SimCLR, with either seed
    assert all(top1[a] - top1["vae"] < top1["simclr"] - top1[a] for a in ("aavae", "aavae-s1"))
    # "AAVAE and AAAE are level": each seed's paired difference within two standard errors
    for seed1 in (False, True):
        diff, se = paired(r30, "aavae", "aaae", seed1=seed1)
        assert abs(diff) < 2 * se
    # "the authors' AAAE ... is the lowest of the autoencoders", "2.6 below the AAAE that reconstructs the original"
    assert min(AUTOENCODERS, key=top1.get) == "aaae-authors"
    assert f"{top1['aaae'] - top1['aaae-authors']:.1f} below the AAAE" in readme
    # an ordering the prose once asserted and the rows no longer hold must not come back
    for words in (readme, folder):
        if "The VAE stays last on the probe" in words:
            assert min(AUTOENCODERS, key=top1.get) == "vae", "the VAE is not last on the probe"
    # the verdict's spans: SimCLR and supervised training above AAVAE, over its two seeds
    simclr = [paired(r30, "simclr", "aavae")[0], paired(r30, "simclr", "aavae", seed1=True)[0]]
    supervised = [top1["supervised"] - top1[a] for a in ("aavae", "aavae-s1")]
    assert f"SimCLR trained the same way is {span(simclr)} points above AAVAE" in readme
    assert f"supervised training of the same encoder {span(supervised)}" in readme
    # "on the scale from the random encoder to supervised training SimCLR covers 54 % and AAVAE 26-34 %"
    scale = lambda row: 100 * (top1[row] - top1["random init"]) / (top1["supervised"] - top1["random init"])
    assert f"SimCLR covers {scale('simclr'):.0f} %" in readme
    assert f"AAVAE {min(int(scale(a)) for a in ('aavae', 'aavae-s1'))}-{max(round(scale(a)) for a in ('aavae', 'aavae-s1'))} %" in readme


def last_validation(row):
    with open(os.path.join(RESULTS, "small-cpu-30", "runs", f"folder-{row}", "log.jsonl")) as f:
        return [json.loads(line) for line in f if "val_images" in line][-1]


def test_fig5s_reading_is_the_runs_last_validation():
    val = {row: last_validation(row) for row in AUTOENCODERS + CONTROLS}
    readme = prose(text("README.md"))
    assert f"cosine {val['aavae']['val_sim_same']:.3f} in AAVAE against {val['vae']['val_sim_same']:.3f} in the VAE" in readme
    # what does not hold: the VAE is not collapsed; its different-image cosine is the lowest of every row
    assert min(val, key=lambda r: val[r]["val_sim_diff"]) == "vae"
    assert f"lowest different-image cosine of every row ({val['vae']['val_sim_diff']:.3f})" in readme
    assert val["vae"]["val_active_units"] == 128 and "all 128 units active" in readme
    assert f"signal over noise {val['aavae']['val_latent_snr']:.1f}" in readme


def pretraining_minutes():
    """Each run's pretraining minutes in run.json, summed over the invocations that ran it."""
    minutes = {}
    for inv in data(*SMALL30, "run.json")["invocations"]:
        for step in inv.get("steps", []):
            if step["step"].startswith("runs/"):
                row = step["step"][len("runs/folder-"):]
                minutes[row] = minutes.get(row, 0) + step["minutes"]
    return minutes


def test_the_minutes_and_the_machine_the_pages_quote_are_run_json(r30):
    minutes = pretraining_minutes()
    alone = ["simclr", "vae", "aaae-s1", "aavae-s1", "ae", "aaae-authors"]
    folder = text(*SMALL30, "README.md")
    assert ", ".join(f"{minutes[r]:.1f}" for r in alone) in folder
    assert f"{span(minutes[r] for r in alone)} min of pretraining per row" in prose(text("README.md"))
    assert f"{minutes['supervised']:.1f} over the three invocations" in folder
    invocations = data(*SMALL30, "run.json")["invocations"]
    assert "native_bf16" not in invocations[0] and all(inv["native_bf16"] for inv in invocations[1:])
    assert "in every entry of `run.json` but the first" in prose(folder)
    assert f"has {invocations[0]['minutes']} for the whole part" in folder
    first = {data(*SMALL30, "runs", f"folder-{r}", "args.json")["provenance"]["git_commit"][:7] for r in ("aavae", "aaae")}
    assert first == {"bee1688"} and invocations[0]["provenance"]["git_commit"].startswith("e16b7f7")


def test_the_budgets_ratio_to_the_papers_is_computed_from_the_runs():
    args = data(*SMALL30, "runs", "folder-aavae", "args.json")
    steps = max(json.loads(line)["step"] for line in open(os.path.join(RESULTS, "small-cpu-30", "runs", "folder-aavae", "log.jsonl")))
    assert steps == args["epochs"] * (4085 // args["batch_size"])
    seen, paper = steps * args["batch_size"], 3200 * grid.IMAGES["cifar10"]
    readme = prose(text("README.md"))
    assert f"each row saw {seen:,} images, 1/{round(paper / seen, -1):,.0f} of the {paper // 10**6} million" in readme


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


def test_the_30_epoch_pages_quote_the_10_epoch_rows_as_they_are():
    ten = {r["row"]: r["linear_top1"] for r in data("results", "small-cpu", "results.json")}
    thirty = {r["row"]: r["linear_top1"] for r in data(*SMALL30, "results.json")["rows"]}
    folder = prose(text(*SMALL30, "README.md"))
    for row, name in (("aavae", "AAVAE"), ("aaae", "AAAE"), ("vae", "VAE"), ("ae", "AE")):
        assert f"{name} {ten[row]:.1f} -> {thirty[row]:.1f}" in folder, row
    assert f"the authors' AAAE {ten['aaae, augmented target']:.1f} -> {thirty['aaae-authors']:.1f}" in folder
    gains = [thirty[r] - ten[r] for r in ("ae", "aaae", "vae", "aavae")] + [thirty["aaae-authors"] - ten["aaae, augmented target"]]
    assert f"every autoencoder gained {span(gains)} points" in prose(text("README.md"))


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
    for x in (x for x in r["table2"] if not x.get("y_head")):  # every fine-tuned and probed row learned from the same images
        assert {x[c]["train_images"] for c in report.TABLE2_COLUMNS if "1percent" in c} == {40}
        assert {x[c]["train_images"] for c in report.TABLE2_COLUMNS if "10percent" in c} == {407}
    lists = {pct: text(*LABELS, "label-subsets", f"{pct}.txt").split() for pct in ("1percent", "10percent")}
    assert len(lists["1percent"]) == 40 and len(lists["10percent"]) == 407


def test_the_readmes_key_rows_of_table2_and_the_clusters_are_results_json():
    r = data(*LABELS, "results.json")
    clusters = {x["label"]: x for x in r["clusters"]}  # k-means at K = the classes: the label is the encoder's
    expected = [[x["label"]]
                + [report.fmt_se(x[c]["top1"], x[c]["se"]) for c in report.TABLE2_COLUMNS]
                + [report.fmt_se(*clusters[x["label"]]["majority_top1"]),
                   report.fmt_se(*clusters[x["label"]]["nmi"], digits=3)] for x in r["table2"] if not x.get("y_head")]
    assert table_after(text("README.md"), "| encoder | fine-tuned, 1 % | probe, 1 % | fine-tuned, 10 % | probe, 10 % | "
                                          "clusters, majority label") == expected


def test_the_fine_tuning_choice_is_its_evaluations():
    quoted = table_after(text(*LABELS, "README.md"), "| encoder | labelled images | epochs")
    assert len(quoted) >= 10
    for encoder, images, epochs, backbone, head, top1 in quoted:
        name = {"fine-tuned": "finetune", "probe": "linear"}[encoder.split(", ")[1]]
        pct = "1percent" if images == "30" else "10percent"
        who = encoder.split(", ")[0].replace("random init", "random")
        suffix = f"-e{epochs}" + ("-lr10th" if name == "finetune" and float(backbone) < linear_eval.FINETUNE_LR[
            0.01 if pct == "1percent" else 0.1][0] else "") if name == "finetune" else ""
        r = data(*LABELS, "finetune-choice", "evals", f"{name}-{pct}-{who}{suffix}", "result.json")
        assert f"{r['top1']:.1f}" == top1.split(" ")[0] and r["train_images"] == int(images), (encoder, images, epochs)
        assert r["test_images"] == 1000


def test_what_the_retraining_reproduced_and_what_the_labels_show_is_computed_from_the_files():
    words = prose(text(*LABELS, "README.md"))
    hits = lambda folder, name: data("results", folder, "evals", name, "result.json")["correct"]
    retrained = []  # (value, se) of each retrained evaluation against the committed one, paired on val/
    for row in ("folder-aavae", "folder-aaae", "folder-vae", "folder-ae", "folder-simclr", "folder-supervised", "folder-aaae-authors",
                "random"):
        for probe in ("linear", "knn"):
            old, new = (data("results", f, "evals", f"{probe}-{row}", "result.json")["top1"] for f in ("small-cpu-30", "small-cpu-30-labels"))
            diff, se = report.paired_difference(hits("small-cpu-30-labels", f"{probe}-{row}"), hits("small-cpu-30", f"{probe}-{row}"))
            assert f"{old:.1f} -> {new:.1f}" in words and f"{diff:+.1f} ± {se:.1f}" in words, (row, probe)
            retrained.append((diff, se))
    saved = data(*LABELS, "results.json")
    pairs = [tuple(d[c]) for d in saved["label_paired_differences"] for c in report.TABLE2_COLUMNS + ["majority", "hungarian", "nmi"]]
    pairs += [tuple(d[pct]) for d in saved["finetune_over_probe"] for pct in grid.LABEL_FRACTIONS.values()]
    pairs += json_pairs(saved) + json_pairs(data("results", "small-cpu-30", "results.json"))  # Table 1's, retrained and committed
    pairs += uses_pairs(saved)
    wrong = [f"{v} ± {s}" for v, s in quoted_pairs(text(*LABELS, "README.md")) if not matches(v, s, pairs + retrained)]
    assert not wrong, f"results/small-cpu-30-labels/README.md quotes {wrong}, which its files do not hold"
    lists = [text(*LABELS, "label-subsets", f"{pct}.txt").split() for pct in ("1percent", "10percent")]
    per_class = lambda names: [sum(n.startswith(c + "/") for n in names) for c in {n.split("/")[0] for n in names}]
    assert set(per_class(lists[0])) == {4} and "40 images, 4 of each class" in words
    assert f"407, {min(per_class(lists[1]))}-{max(per_class(lists[1]))} of each" in words


def test_the_aae_uses_adversarial_weight_choice_is_its_evaluations():
    # results/aae-uses-choice: every cell of its table and every paired difference of its prose, from the files
    folder = ("results", "aae-uses-choice")
    runs = {"semi": "aa-semi-aae-1percent", "cluster": "aa-cluster-aae-k16"}
    ev = lambda w, name: data(*folder, f"w{w}", "evals", f"{name.split()[0]}-folder-{runs[name.split()[1]]}", "result.json")
    quoted = table_after(text(*folder, "README.md"), "| `--adv_weight` |")
    assert [r[0] for r in quoted] == ["1", "0.1"]
    pairs = []
    for w, semi, cluster, nmi, used, *features in quoted:
        assert semi == f"{ev(w, 'head semi')['top1']:.1f}"
        c = ev(w, "head cluster")
        assert cluster == f"{c['majority_top1']:.1f}" and nmi == f"{c['nmi']:.3f}" and used == f"{c['clusters_used']} of {c['clusters']}"
        assert features == [f"{ev(w, f'{m} {u}')['top1']:.1f}" for u in ("semi", "cluster") for m in ("linear", "knn")]
        assert all(r["test_images"] == 1000 for r in (ev(w, "head semi"), c))
    for name in ("head semi", "head cluster", "linear semi", "linear cluster", "knn semi", "knn cluster"):
        pairs.append(report.paired_difference(ev("0.1", name)["correct"], ev("1", name)["correct"]))
    quoted_pairs_ = quoted_pairs(text(*folder, "README.md").split("## The categorical adversary")[0])
    assert len(quoted_pairs_) == 6 and all(matches(v, s, pairs) for v, s in quoted_pairs_), quoted_pairs_
    assert data(*folder, "w1", "holdout.json") == data(*folder, "w0.1", "holdout.json")  # one split for both
    assert aae_uses.ADV_WEIGHT == 0.1  # the rule's outcome: 0.1 won on both heads


def test_the_study_of_ys_adversarial_weight_is_its_evaluations():
    # results/aae-uses-choice's second part: y's fooling loss weighed alone, the clustering use on the held-out images
    folder = ("results", "aae-uses-choice")
    part = text(*folder, "README.md").split("## The categorical adversary")[1]
    ev = lambda w, mode: data(*folder, f"y{w}", "evals", f"{mode}-folder-aa-cluster-aae-k16", "result.json")
    quoted = table_after(part, "| `--adv_weight_y` |")
    assert [r[0] for r in quoted] == ["0.1", "1", "10"]
    pairs = []
    for w, used, majority, nmi, probe, knn in quoted:
        head = ev(w, "head")
        args = data(*folder, f"y{w}", "runs", "folder-aa-cluster-aae-k16", "args.json")
        assert args["adv_weight_y"] == float(w) and args["adv_weight"] == 0.1 and args["epochs"] == 10
        assert used == f"{head['clusters_used']} of {head['clusters']}" and majority == f"{head['majority_top1']:.1f}"
        assert nmi == f"{head['nmi']:.3f}" and probe == f"{ev(w, 'linear')['top1']:.1f}" and knn == f"{ev(w, 'knn')['top1']:.1f}"
        split = lambda d: {k: v for k, v in data(*folder, d, "holdout.json").items() if k != "source"}  # where the tree was
        assert head["test_images"] == 1000 and split(f"y{w}") == split("w0.1")
        if w != "0.1":
            pairs += [report.paired_difference(ev(w, m)["correct"], ev("0.1", m)["correct"]) for m in ("head", "linear", "knn")]
            pairs.append(report.bootstrap_nmi(ev(w, "head"), ev("0.1", "head")))
    # the straight-through run (st/), beside the 0.1 run, by the rule fixed before it ran
    st = {m: data(*folder, "st", "evals", f"{m}-folder-aa-cluster-aae-k16", "result.json") for m in ("head", "linear", "knn")}
    rows = dict((r[0], r[1:]) for r in table_after(part, "| y's fooling gradient |"))
    assert rows["through the softmax (`y0.1/`)"] == quoted[0][1:]
    assert rows["past it (`st/`)"] == [f"{st['head']['clusters_used']} of 16", f"{st['head']['majority_top1']:.1f}",
                                       f"{st['head']['nmi']:.3f}", f"{st['linear']['top1']:.1f}", f"{st['knn']['top1']:.1f}"]
    assert data(*folder, "st", "runs", "folder-aa-cluster-aae-k16", "args.json")["y_straight_through"] is True
    assert st["head"]["clusters_used"] <= 7 and "not what keeps y in a few clusters" in prose(part)  # the rule's verdict
    pairs += [report.paired_difference(st[m]["correct"], ev("0.1", m)["correct"]) for m in ("head", "linear", "knn")]
    pairs.append(report.bootstrap_nmi(st["head"], ev("0.1", "head")))
    wrong = [f"{v} ± {e}" for v, e in quoted_pairs(part) if not matches(v, e, pairs)]
    assert not wrong and len(quoted_pairs(part)) == len(pairs), wrong
    st_log = run_log(*folder, "st", "runs", "folder-aa-cluster-aae-k16")
    st_used = [x["val_clusters_used"] for x in st_log if "val_clusters_used" in x]
    st_sizes = sorted((n for n in st["head"]["cluster_sizes"] if n), reverse=True)
    assert f"({', '.join(f'{n:,}' for n in st_sizes[:-1])} and {st_sizes[-1]:,} images)" in prose(part)
    assert f"counted {st_used[0]} clusters on the 1,000 after the first epoch, then fewer, {st_used[-1]} after the last" in prose(part)
    assert st_used[0] == max(st_used) and f"largest probability {st['head']['y_confidence']:.2f})" in prose(part)
    assert (f"on {loss_span(st_log, 'disc_loss_y')}, the encoder's fooling loss {loss_span(st_log, 'gen_loss_y')})"
            in prose(part))
    st_minutes = data(*folder, "st", "run.json")["invocations"][-1]["steps"][0]
    assert f"`st/`, the same way ({st_minutes['minutes']:.1f} min)" in prose(part)
    words = prose(part)
    logs = {w: run_log(*folder, f"y{w}", "runs", "folder-aa-cluster-aae-k16") for w, *_ in quoted}
    y_span = lambda w, k: loss_span(logs[w], k)
    weights = [w for w, *_ in quoted]
    assert f"loss stays at {', '.join(y_span(w, 'disc_loss_y') for w in weights[:-1])} and {y_span('10', 'disc_loss_y')}" in words
    assert f"fooling loss at {', '.join(y_span(w, 'gen_loss_y') for w in weights[:-1])} and {y_span('10', 'gen_loss_y')}" in words
    confidence = [f"{ev(w, 'head')['y_confidence']:.2f}" for w in weights]
    assert f"largest probability {confidence[0]}, {confidence[1]} and {confidence[2]})" in words
    used = [ev(w, "head")["clusters_used"] for w in weights]
    assert f": {used[0]}, {used[1]} and {used[2]} of 16 at 0.1, 1 and 10." in words and used[2] == used[0] and max(used) <= 8
    sizes = {w: sorted((n for n in ev(w, "head")["cluster_sizes"] if n), reverse=True) for w in ("0.1", "10")}
    assert all(f"{', '.join(f'{n:,}' for n in sizes[w][:-1])} and {sizes[w][-1]:,}" in words for w in sizes)
    minutes = [data(*folder, f"y{w}", "run.json")["invocations"][-1]["steps"][0] for w in weights]
    assert all(m["step"] == "runs/folder-aa-cluster-aae-k16" for m in minutes)
    assert f"each run {minutes[0]['minutes']:.1f}, {minutes[1]['minutes']:.1f} and {minutes[2]['minutes']:.1f} min" in words
    # the default's run trained again at the study's commit repeats the first study's 0.1 run exactly
    first = run_log(*folder, "w0.1", "runs", "folder-aa-cluster-aae-k16")
    timing = ("img_per_s", "tflop_per_s")  # the machine's speed, not the run's numbers
    same = lambda log: [{k: v for k, v in x.items() if k not in timing} for x in log]
    assert same(logs["0.1"]) == same(first) and sum("loss" in x for x in first) == 24 and any("val_cluster_nmi" in x for x in first)
    again = data(*folder, "w0.1", "evals", "head-folder-aa-cluster-aae-k16", "result.json")
    assert ev("0.1", "head")["test_clusters"] == again["test_clusters"] and "repeats the first study's 0.1 run" in words


def uses_pairs(r):
    """Every (value, standard error) of results.json's uses: each run's probe and kNN, and its paired differences."""
    return [tuple(u[k]) for u in r.get("uses", []) for k in ("linear", "knn")] + \
        [tuple(d) for u in r.get("uses", []) for d in u.get("paired", {}).values()]


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
            assert os.path.basename(r["subset_file"]) == row.rsplit("-", 1)[1] + ".txt" and r["test_images"] == 1000
    pairs = table_after(readme, "| run | difference |")
    assert pairs == table_after(text(*LABELS, "table1.md"), "| run | difference |")
    lens = table_after(readme, "| run | difference with the plain run |")  # each augmented use against its plain twin
    assert lens == table_after(text(*LABELS, "table1.md"), "| run | difference with the plain run |")
    assert all(label.endswith(f" - {row.removeprefix('aa-')}'s") for row, label, _ in lens) and lens
    pairs += lens
    assert sorted((row, label) for row, label, _ in pairs) == sorted((row, label) for row, u in uses.items() for label in u.get("paired", {}))
    for row, label, value in pairs:
        assert value == report.fmt_se(*uses[row]["paired"][label], digits=3 if "NMI" in label else 2), (row, label)
    words = prose(readme.split("## The adversarial autoencoder's uses")[1])
    wrong = [f"{v} ± {s}" for v, s in quoted_pairs(readme.split("## The adversarial autoencoder's uses")[1])
             if not matches(v, s, uses_pairs(saved))]
    assert not wrong, wrong
    # the runs' logs, as the prose reads them: the adversaries' losses from step 100 on
    logs = {row: run_log(*LABELS, "runs", f"folder-{row}")
            for row in ("aa-semi-aae-1percent", "aa-cluster-aae-k16", "semi-aae-1percent", "cluster-aae-k16")}
    u_span = lambda row, k, d: loss_span(logs[row], k, d)
    assert (f"stays at {u_span('aa-semi-aae-1percent', 'disc_loss_z', 2)} and the encoder's fooling loss at "
            f"{u_span('aa-semi-aae-1percent', 'gen_loss_z', 1)}") in words
    assert f"in the clustering run {u_span('aa-cluster-aae-k16', 'disc_loss_z', 2)} and {u_span('aa-cluster-aae-k16', 'gen_loss_z', 1)}" in words
    assert f"(`disc_loss_y` {u_span('aa-semi-aae-1percent', 'disc_loss_y', 2)} and {u_span('aa-cluster-aae-k16', 'disc_loss_y', 2)})" in words
    assert (f"in the plain ones the z discriminator's loss is {u_span('semi-aae-1percent', 'disc_loss_z', 2)} (semi-supervised) and "
            f"{u_span('cluster-aae-k16', 'disc_loss_z', 2)} (clustering), the categorical one's {u_span('semi-aae-1percent', 'disc_loss_y', 2)} "
            f"and {u_span('cluster-aae-k16', 'disc_loss_y', 2)}") in words
    dimred = run_log(*LABELS, "runs", "folder-aa-dimred-aae")
    assert f"`disc_loss_z` {loss_span(dimred, 'disc_loss_z')} from step 100 on" in words
    assert f"settles in {dimred[-1]['val_clusters_used']} of its 16 clusters" in words
    assert data(*LABELS, "runs", "folder-aa-dimred-aae", "args.json")["clusters"] == 16
    assert f"(`evals/map-folder-aa-dimred-aae/map.png`, {uses['aa-dimred-aae']['top1']:.1f} %)" in words
    log = logs["aa-semi-aae-1percent"]
    y = [x["val_y_top1"] for x in log if "val_y_top1" in x]
    assert len(y) == 30 and f"between {min(y):.1f} and {max(y):.1f}" in words and f"{y[-1]:.1f}" == f"{uses['aa-semi-aae-1percent']['top1']:.1f}"
    last = next(x for x in reversed(log) if "label_top1" in x)
    assert f"{round(last['label_top1'])} % of it right at the last step" in words and last["step"] == 930
    assert f"vote in it is {uses['aavae']['top1']:.1f} %" in words
    minutes = lambda row: [st["minutes"] for inv in data(*LABELS, "run.json")["invocations"] for st in inv["steps"]
                           if st["step"] == f"runs/folder-{row}"][-1]
    # each run's commit (args.json; its evaluations' result.json) and its pretraining minutes (run.json's last part)
    when = table_after(readme, "| run | trained at |")
    assert sorted(r[0] for r in when) == sorted(set(uses) - {"aavae"})
    commit = lambda *path: data(*LABELS, *path)["provenance"]["git_commit"][:7]
    for row, trained, evaluated, mins, _ in when:
        assert trained == commit("runs", f"folder-{row}", "args.json") and f"{minutes(row):.1f}" == mins, row
        evals = {commit("evals", d, "result.json") for d in os.listdir(os.path.join(ROOT, *LABELS, "evals")) if d.endswith(f"-folder-{row}")}
        first = next(iter(evals)) if len(evals) == 1 else trained  # where two, the run's own first, then the rerun
        assert evals == set(re.findall(r"\b[0-9a-f]{7}\b", evaluated)) and evaluated.startswith(first), row
    grid = uses["aa-supervised-aae"]
    assert f"own label the error is {grid['recon_own_label']:.4f}, with the next class's {grid['recon_other_label']:.4f}" in " ".join(words.split())
    # the clustering y head: the clusters it uses on train/, and k-means on AAVAE at the same K
    head = data(*LABELS, "evals", "head-folder-aa-cluster-aae-k16", "result.json")
    used = [n for n in head["cluster_sizes"] if n]
    assert len(used) == head["clusters_used"] == 4 and sum(head["cluster_sizes"]) == 4085
    assert f"into {len(used)} of its {head['clusters']} clusters** ({', '.join(f'{n:,}' for n in used[:-1])} and {used[-1]:,} images" in words
    counts = [x["val_clusters_used"] for x in logs["aa-cluster-aae-k16"] if "val_clusters_used" in x]
    assert f"counted {counts[0]} after the first epoch and {min(counts[1:])} or {max(counts[1:])} after every later one" in words
    kmeans = data(*LABELS, "evals", "cluster-k16-folder-aavae", "result.json")
    assert kmeans["clusters"] == 16 and f"AAVAE's features ({kmeans['majority_top1']:.1f};" in words
    assert f"NMI {head['nmi']:.3f} against {kmeans['nmi']:.3f}" in words
    choice = [data("results", "aae-uses-choice", w, "evals", "head-folder-aa-cluster-aae-k16", "result.json")["clusters_used"]
              for w in ("w1", "w0.1")]
    assert f"with either weight ({min(choice)} or {max(choice)} of" in words
    readme_words = prose(text("README.md"))  # README.md's sentences on the uses
    cost = ("cluster-aae-k16", "aa-cluster-aae-k16", "cluster-aae-k10", "aa-cluster-aae-k10", "aa-dimred-aae", "aa-supervised-aae")
    probes = [-d for row in cost for label, (d, _) in uses[row]["paired"].items() if label in ("probe - AAVAE's probe", "kNN - AAVAE's kNN")]
    assert len(probes) == 12 and len(uses) - 1 == len(grid.USES_ROWS) == 10 and "the small profile's ten runs" in readme_words
    assert f"cost the encoder {min(probes):.0f}-{max(probes):.0f} points of probe and kNN" in readme_words
    for pct, n in (("1percent", 40), ("10percent", 407)):
        assert (f"{uses[f'aa-semi-aae-{pct}']['top1']:.1f} against "
                f"{data(*LABELS, 'evals', f'finetune-{pct}-folder-aavae', 'result.json')['top1']:.1f} with {n}") in readme_words
    assert (f"well below ({uses['semi-aae-1percent']['top1']:.1f} and {uses['semi-aae-10percent']['top1']:.1f}; "
            f"augmented") in readme_words
    verdict = [(v, n) for v, n in zip(head["prior_verdict"], head["cluster_sizes"])]
    assert f"each of the {sum(not n for _, n in verdict)} unused clusters a prior sample with probability " \
           f"{min(v for v, n in verdict if not n):.2f}" in words and f"{max(v for v, n in verdict if not n):.2f}" == "1.00"
    assert f"those of the {len(used)} used ones {min(v for v, n in verdict if n):.2f}-{max(v for v, n in verdict if n):.2f}" in words
    assert f"on `train/` is {head['y_confidence']:.2f}" in words
    # the augmented semi-supervised AAE at 10 %: its y head against AAVAE's on the same 407 images, its monitor, its batch
    ten_log = run_log(*LABELS, "runs", "folder-aa-semi-aae-10percent")
    t_y = [x["val_y_top1"] for x in ten_log if "val_y_top1" in x]
    t_last = next(x for x in reversed(ten_log) if "label_top1" in x)
    aavae10 = {m: data(*LABELS, "evals", f"{m}-10percent-folder-aavae", "result.json")["top1"] for m in ("finetune", "linear")}
    assert f"y head scores {uses['aa-semi-aae-10percent']['top1']:.1f}**" in words and len(t_y) == 30
    assert f"the same 407 images ({aavae10['finetune']:.1f})" in words and f"probe on them ({aavae10['linear']:.1f})" in words
    assert f"between {t_y[0]:.1f} (after the first epoch) and {t_y[-1]:.1f} (the last" in words and min(t_y) == t_y[0] and max(t_y) == t_y[-1]
    assert f"it got {round(t_last['label_top1'])} % of its labelled batch right" in words and t_last["step"] == 930
    assert f"(`disc_loss_y` {loss_span(ten_log, 'disc_loss_y')}, `disc_loss_z` {loss_span(ten_log, 'disc_loss_z')})" in words
    assert (f"probes {uses['aa-semi-aae-10percent']['linear'][0]:.1f} with all of `train/`'s labels" in words
            and f"kNN {uses['aa-semi-aae-10percent']['knn'][0]:.1f}" in words)
    # the plain semi-supervised AAE: its y head, its labelled batch and its monitor
    plain_log = run_log(*LABELS, "runs", "folder-semi-aae-1percent")
    p_y = [x["val_y_top1"] for x in plain_log if "val_y_top1" in x]
    p_last = next(x for x in reversed(plain_log) if "label_top1" in x)
    assert len(p_y) == 30 and f"on `val/` between {min(p_y):.1f} and {max(p_y):.1f}" in words
    assert f"by heart ({round(p_last['label_top1'])} % at the last step)" in words and p_last["step"] == 930
    assert f"scores {uses['semi-aae-1percent']['top1']:.1f} with its y head" in words
    # the plain clustering AAE, beside the augmented one
    plain = data(*LABELS, "evals", "head-folder-cluster-aae-k16", "result.json")
    p_used = [n for n in plain["cluster_sizes"] if n]
    p_counts = [x["val_clusters_used"] for x in run_log(*LABELS, "runs", "folder-cluster-aae-k16")
                if "val_clusters_used" in x]
    first_low = next(i for i, c in enumerate(p_counts) if c == min(p_counts)) + 1
    assert all(c == min(p_counts) for c in p_counts[first_low - 1:])
    assert (f"also puts `train/` into {len(p_used)} of its 16 clusters ({', '.join(f'{n:,}' for n in p_used[:-1])} and {p_used[-1]:,} "
            f"images; its monitor counted {p_counts[0]} after the first epoch, {min(p_counts)} from epoch {first_low} on), "
            f"its y as confident ({plain['y_confidence']:.2f})") in words
    p_verdict = list(zip(plain["prior_verdict"], plain["cluster_sizes"]))
    assert (f"sure of the {sum(not n for _, n in p_verdict)} unused clusters ({min(v for v, n in p_verdict if not n):.2f}; "
            f"{min(v for v, n in p_verdict if n):.2f}-{max(v for v, n in p_verdict if n):.2f} on the used ones)") in words
    assert f"Majority {plain['majority_top1']:.1f}, NMI {plain['nmi']:.3f}" in words
    # the plain semi-supervised AAE at 10 %: its y head, its labelled batch, its monitor
    p10_log = run_log(*LABELS, "runs", "folder-semi-aae-10percent")
    p10_y = [x["val_y_top1"] for x in p10_log if "val_y_top1" in x]
    p10_last = next(x for x in reversed(p10_log) if "label_top1" in x)
    assert f"`semi-aae-10percent` scores {uses['semi-aae-10percent']['top1']:.1f} with its" in words and len(p10_y) == 30
    assert f"It too gets {round(p10_last['label_top1'])} % of its labelled batch right" in words and p10_last["step"] == 930
    assert f"where the augmented run got {round(t_last['label_top1'])} %" in words
    assert f"head on `val/` between {min(p10_y):.1f} and {max(p10_y):.1f}:" in words
    lift = lambda kind: " to ".join(f"{uses[f'{kind}semi-aae-{pct}']['top1']:.1f}" for pct in ("1percent", "10percent"))
    assert f"lift the head from {lift('')}, with it from {lift('aa-')}." in words
    # the clustering AAE at K = 10, augmented and plain, against k-means on AAVAE at K = 10 and the runs at K = 16
    k10 = {row: data(*LABELS, "evals", f"head-folder-{row}", "result.json") for row in ("aa-cluster-aae-k10", "cluster-aae-k10")}
    sizes = {row: sorted((n for n in h["cluster_sizes"] if n), reverse=True) for row, h in k10.items()}
    assert all(h["clusters"] == 10 and h["clusters_used"] == len(sizes[row]) and sum(h["cluster_sizes"]) == 4085 for row, h in k10.items())
    assert (f"into {len(sizes['aa-cluster-aae-k10'])} of its 10 clusters, one of them a single image "
            f"({', '.join(f'{n:,}' for n in sizes['aa-cluster-aae-k10'][:-1])} and {sizes['aa-cluster-aae-k10'][-1]:,}), the plain y into {len(sizes['cluster-aae-k10'])} "
            f"({', '.join(f'{n:,}' for n in sizes['cluster-aae-k10'][:-1])} and {sizes['cluster-aae-k10'][-1]:,} images)") in words
    assert sizes["aa-cluster-aae-k10"][-1] == 1
    for row, kind in (("aa-cluster-aae-k10", "augmented"), ("cluster-aae-k10", "plain")):
        c = [x["val_clusters_used"] for x in run_log(*LABELS, "runs", f"folder-{row}")
             if "val_clusters_used" in x]
        since = next(i for i in range(len(c)) if all(n == c[-1] for n in c[i:])) + 1
        assert len(c) == 30 and f"from epoch {since} on ({kind})" in words and c[-1] == 3 and min(c) == 3
    h, p = k10["aa-cluster-aae-k10"], k10["cluster-aae-k10"]
    assert h["majority_top1"] == h["hungarian_top1"] and p["majority_top1"] == p["hungarian_top1"]
    assert f"they score {h['majority_top1']:.1f} and {p['majority_top1']:.1f} (the Hungarian matching gives the same" in words
    k10_means = data(*LABELS, "evals", "cluster-folder-aavae", "result.json")
    assert k10_means["clusters"] == 10
    assert (f"against {k10_means['majority_top1']:.1f} by majority and {k10_means['hungarian_top1']:.1f} by Hungarian for "
            f"k-means with K = 10") in words
    assert f"NMI {h['nmi']:.3f} and {p['nmi']:.3f} against {k10_means['nmi']:.3f}" in words
    assert (f"({k10_means['majority_top1']:.1f} at K = 10 against {kmeans['majority_top1']:.1f} at 16) where the collapsed y "
            f"heads hardly move ({h['majority_top1']:.1f} and {p['majority_top1']:.1f} against {head['majority_top1']:.1f} and "
            f"{plain['majority_top1']:.1f})") in words
    assert kmeans["majority_top1"] - k10_means["majority_top1"] > h["majority_top1"] - head["majority_top1"]
    assert (f"the encoders probe {uses['aa-cluster-aae-k10']['linear'][0]:.1f} and {uses['cluster-aae-k10']['linear'][0]:.1f}"
            in words)
    used_v = lambda r: [v for v, n in zip(r["prior_verdict"], r["cluster_sizes"]) if n > 1]
    assert min(v for v, n in zip(h["prior_verdict"] + p["prior_verdict"], h["cluster_sizes"] + p["cluster_sizes"]) if not n) > 0.995
    assert (f"the used ones {min(used_v(h)):.2f}-{max(used_v(h)):.2f} (augmented, the single-image cluster aside) and "
            f"{min(used_v(p)):.2f}-{max(used_v(p)):.2f} (plain), with y as confident ({h['y_confidence']:.2f} and "
            f"{p['y_confidence']:.2f})") in words
    more = {row: run_log(*LABELS, "runs", f"folder-{row}")
            for row in ("semi-aae-10percent", "aa-cluster-aae-k10", "cluster-aae-k10")}
    zspan = lambda row: loss_span(more[row], "disc_loss_z")
    assert f"the plain run's hardly at all (`disc_loss_y` {loss_span(more['semi-aae-10percent'], 'disc_loss_y')}, where log 2" in words
    assert (f"loss {zspan('semi-aae-10percent')} (plain semi-supervised at 10 %), {zspan('aa-cluster-aae-k10')} and "
            f"{zspan('cluster-aae-k10')} (clustering at K = 10") in words
    assert (f"({len(used)} of 16; {len(sizes['aa-cluster-aae-k10'])} or {len(sizes['cluster-aae-k10'])} of 10)" in readme_words
            and len(used) == len(p_used))
    assert all(f"{uses['aa-cluster-aae-k' + k]['paired'][f'majority - k-means on AAVAE (K = {k})'][0]:.1f} ± " in readme_words
               for k in ("10", "16"))
