"""The report of the experiment grid (experiments/grid.py): one markdown table per table and figure of the paper
with the paper's value beside each cell, the small profile's tables with paired differences on the same test
images, and the figures (with matplotlib). Nothing here runs a model: it reads the runs' log.jsonl and the
evaluations' result.json.
"""
import csv
import json
import math
import os
import shlex

from experiments.grid import (FINETUNE_CHOICE_HOLDOUT, FINETUNE_CHOICE_ROWS, FINETUNE_GRID, LABEL_FRACTIONS, LABEL_ROWS,
                              MNIST_AAE_CHOICE,
                              PAPER_PLACES, PAPER_SIMCLR, PAPER_TABLE2, REGULARISERS, SMALL_BACKBONE_LR_SCALE,
                              SMALL_FINETUNE_EPOCHS, SMALL_LABELS, SPLIT_FINETUNE_EPOCHS, TABLE1_NAMES, TABLE1_ROWS,
                              USES_ROWS, paper_table1, read_json, stable, uses_mode)

# ----------------------------------------------------------------------------------------------------
# Report: one markdown table per table/figure, with the paper's value and the difference where it has one.


def validation(run_dir, at=None):
    """A run's validation line: the one at (key, value), e.g. ("step", 4), or else the last one."""
    try:
        with open(os.path.join(run_dir, "log.jsonl")) as f:
            vals = [r for r in map(json.loads, f) if "val_images" in r]
    except OSError:
        return {}
    if at:
        vals = [r for r in vals if abs(r[at[0]] - at[1]) < 1e-6]
    return vals[-1] if vals else {}


def fmt(v, digits=2):
    return "—" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def report(g, args):
    out = args.output_dir
    os.makedirs(out, exist_ok=True)
    records = []
    for c in g.cells:
        res = read_json(os.path.join(c.eval, "result.json")) or {}
        val = validation(c.run, c.at) if c.run else {}
        records.append({"table": c.table, "row": c.row, "col": c.col, "seed": c.seed, "top1": res.get("top1"),
                        "top5": res.get("top5"), "sim_same": res.get("sim_same"), "sim_diff": res.get("sim_diff"),
                        "active_units": val.get("val_active_units"), "val_bpd": val.get("val_bpd"), "eval": c.eval})
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(records, f, indent=1)
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)

    by = lambda table: [r for r in records if r["table"] == table]
    label = f"profile {args.profile}" + (f", data {args.data_path}" if args.profile == "quick" else "")
    probe_name = "kNN" if g.s["sweep_probe"] == "knn" else "linear"
    tables = {}

    rows, cols = by("table1"), list(g.s["datasets"])
    ref = {c: "cifar10" if c == "folder" else c for c in cols}  # quick: the paper's CIFAR-10 column as the reference
    lines = ["| method | " + " | ".join(f"{c} top-1 | paper ({ref[c]}) | Δ" for c in cols) + " |",
             "|---|" + "---|---|---|" * len(cols)]
    for m in [*TABLE1_ROWS, "random init"]:
        cells = []
        for c in cols:
            vals = [r["top1"] for r in rows if r["row"] == m and r["col"] == c and r["top1"] is not None]
            mean = sum(vals) / len(vals) if vals else None
            spread = f" ± {math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)):.2f}" if len(vals) > 1 else ""
            paper = paper_table1(m, ref[c])
            cells += [fmt(mean) + spread, fmt(paper), fmt(mean - paper if mean is not None and paper is not None else None)]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "The paper's AAAE figures: beside the authors' model (aaae, augmented target) alone."]
    tables["table1"] = ("Table 1: linear-probe top-1 (%)", lines)

    rows = by("fig2")
    lines = [f"| log-scale | fraction of training | {probe_name} top-1 | held-out bpd |", "|---|---|---|---|"]
    lines += [f"| {r['row']} | {r['col']:g} | {fmt(r['top1'])} | {fmt(r['val_bpd'], 4)} |" for r in rows]
    tables["fig2"] = ("Fig. 2: learned vs fixed log-scale over training (paper: density estimation overfits, "
                      "representation quality does not drop)", lines)

    def sweep(name, title, header):
        lines = [f"| {header} | {probe_name} top-1 |", "|---|---|"]
        lines += [f"| {r['row']} | {fmt(r['top1'])} |" for r in by(name)]
        tables[name] = (title, lines)

    sweep("fig3", "Fig. 3: beta * KL added to AAVAE (paper: little change for beta << 1, worse for beta >= 1)", "beta")
    sweep("fig4_batch", "Fig. 4a: batch size, lr and warm-up scaled linearly (paper: nearly flat)", "batch")
    sweep("fig4_latent", "Fig. 4b: latent size (paper: nearly flat)", "latent_dim")
    sweep("fig4_decoder", "Fig. 4c: decoder depth (paper: nearly flat)", "decoder")
    sweep("fig4_logscale", "Fig. 4d: fixed log-scale drawn in [-5, 2] (paper: nearly flat)", "log_scale")

    lines = ["| method | same-image cosine | different-image cosine | gap | matrix |", "|---|---|---|---|---|"]
    for r in by("fig5"):
        gap = r["sim_same"] - r["sim_diff"] if r["sim_same"] is not None else None
        pic = os.path.relpath(os.path.join(r["eval"], "similarity.png"), out)
        lines.append(f"| {r['row']} | {fmt(r['sim_same'], 3)} | {fmt(r['sim_diff'], 3)} | {fmt(gap, 3)} | ![]({pic}) |")
    tables["fig5"] = ("Fig. 5: latent similarity of views (paper: AAVAE clusters per image; the VAE's latents all align)", lines)

    lines = ["| method | labelled images | 1 % labels | paper | Δ | 10 % labels | paper | Δ |",
             "|---|---|---|---|---|---|---|---|"]
    subset = "SimCLR's 1 % / 10 % lists" if args.subset_dir else "seeded per-class subset (the paper: SimCLR's lists)"
    for m in ("vae", "aavae"):
        cells = []
        for frac in (0.01, 0.1):
            v = next((r["top1"] for r in by("table2") if r["row"] == m and r["col"] == frac), None)
            paper = PAPER_TABLE2[m][frac]
            cells += [fmt(v), fmt(paper), fmt(v - paper if v is not None else None)]
        lines.append(f"| {m} | {subset} | " + " | ".join(cells) + " |")
    tables["table2"] = ("Table 2: semi-supervised fine-tuning top-1 (%)", lines)

    if by("table3"):
        lines = ["| method | Places205 top-1 | paper | Δ |", "|---|---|---|---|"]
        for r in by("table3"):
            lines.append(f"| {r['row']} | {fmt(r['top1'])} | {fmt(PAPER_PLACES[r['row']])} | "
                         f"{fmt(r['top1'] - PAPER_PLACES[r['row']] if r['top1'] is not None else None)} |")
        tables["table3"] = ("Table 3: Places205 linear probe of the ImageNet encoders (VOC07+12 detection is out of "
                            "scope: train detectron2's Faster R-CNN C4 on the exported encoder.pth)", lines)

    lines = ["| method | linear top-1 | kNN top-1 | active units | held-out bpd |", "|---|---|---|---|---|"]
    for m in REGULARISERS:
        lin = next((r for r in by("regularisers") if r["row"] == m and r["col"] == "linear"), {})
        knn = next((r for r in by("regularisers") if r["row"] == m and r["col"] == "knn"), {})
        lines.append(f"| {m} | {fmt(lin.get('top1'))} | {fmt(knn.get('top1'))} | {fmt(knn.get('active_units'))} | "
                     f"{fmt(knn.get('val_bpd'), 4)} |")
    tables["regularisers"] = ("Latent regularisers: which one gives the best representation?", lines)

    for name, (title, lines) in tables.items():
        with open(os.path.join(out, f"{name}.md"), "w") as f:
            f.write(f"# {title}\n\n_{label}_\n\n" + "\n".join(lines) + "\n")
    figures(records, out)
    print(f"wrote {len(tables)} tables to {out}/*.md, results.json and results.csv")
    return tables


def pixel_mse(nll, log_scale, pixels):
    """The mean squared error per pixel value implied by a Gaussian -log p(x|z) summed over `pixels` values
    with log-variance log_scale: the variational runs' reconstruction on the AE family's scale."""
    return 2 * math.exp(log_scale) * (nll / pixels - 0.5 * (log_scale + math.log(2 * math.pi)))


MONITOR_KEYS = ("val_linear_top1", "val_knn_top1", "val_recon", "val_active_units", "val_latent_snr")


def curves(run_dir):
    """Per-epoch rows of a run's log.jsonl: the mean training loss and reconstruction error (MSE per pixel
    value, for every method) of the epoch, and its validation line."""
    try:
        with open(os.path.join(run_dir, "log.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        pixels = 3 * read_json(os.path.join(run_dir, "args.json"))["image_size"] ** 2
    except (OSError, TypeError, KeyError):
        return []
    out, log_scale = {}, None
    for r in rows:
        epoch = math.ceil(r["epoch"] - 1e-9)
        e = out.setdefault(epoch, {"epoch": epoch, "losses": [], "mse": []})
        if "loss" in r:
            log_scale = r.get("log_scale")  # present for the Gaussian likelihood, whose recon is -log p(x|z)
            e["losses"].append(r["loss"])
            if "recon" in r:  # the controls reconstruct nothing
                e["mse"].append(r["recon"] if log_scale is None else pixel_mse(r["recon"], log_scale, pixels))
        elif "val_images" in r:  # a validation line
            e.update({k: r.get(k) for k in MONITOR_KEYS})
            if "val_recon" in r:
                e["val_recon_mse"] = r["val_recon"] if log_scale is None else pixel_mse(r["val_recon"], log_scale, pixels)
    mean = lambda v: sum(v) / len(v) if v else None
    return [{"epoch": e["epoch"], "loss": mean(e["losses"]), "recon_mse": mean(e["mse"]),
             "val_recon_mse": e.get("val_recon_mse"), **{k: e.get(k) for k in MONITOR_KEYS}} for _, e in sorted(out.items())]


SMALL_PAIRS = [("aavae", "aaae"), ("aavae", "vae"), ("aaae", "ae"), ("aaae-authors", "ae"), ("aaae", "aaae-authors"),
               ("simclr", "aavae"), ("supervised", "simclr")]
SMALL_SEEDS = {"aavae": "aavae-s1", "aaae": "aaae-s1"}


def binomial_se(top1, n):
    """The standard error (points) of an accuracy of top1 % over n test images, sqrt(p (100 - p) / n)."""
    return math.sqrt(top1 * (100 - top1) / n)


def paired_difference(a, b):
    """(mean, standard error) in points of a - b, two encoders' per-image hits (result.json's "correct") on the
    same test images: the paired error, smaller than the two rows' errors combined when the rows agree on
    which images are easy."""
    if not a or not b or len(a) != len(b):
        return None, None
    d = [x - y for x, y in zip(a, b)]
    n, m = len(d), sum(d) / len(d)
    return 100 * m, 100 * math.sqrt(sum((v - m) ** 2 for v in d) / (n - 1) / n)


def fmt_se(value, se, digits=2):
    return "—" if value is None else f"{value:.{digits}f} ± {se:.{digits}f}" if se is not None else fmt(value, digits)


def bootstrap_nmi(a, b=None, draws=1000, seed=0):
    """NMI of a result.json's test clusters and labels, and its bootstrap standard error over the test images
    (draws seeded resamples); with b, the same for NMI(a) - NMI(b) on the same resamples (paired)."""
    import numpy as np
    from methods.clustering import nmi
    if not a or (b is not None and not b) or (b is not None and b["test_labels"] != a["test_labels"]):
        return None, None
    labels = np.asarray(a["test_labels"])
    parts = [np.asarray(r["test_clusters"]) for r in ([a] if b is None else [a, b])]
    stat = lambda idx: nmi(parts[0][idx], labels[idx]) - (nmi(parts[1][idx], labels[idx]) if b is not None else 0)
    rng = np.random.default_rng(seed)
    every = np.arange(len(labels))
    values = [stat(rng.integers(0, len(labels), len(labels))) for _ in range(draws)]
    return stat(every), float(np.std(values, ddof=1))


TABLE2_COLUMNS = [f"{mode} {pct}" for pct in LABEL_FRACTIONS.values() for mode in ("finetune", "linear")]
LABEL_PAIRS = [("aavae", "aaae"), ("aavae", "vae"), ("simclr", "aavae"), ("aavae", "random init"),
               ("supervised", "simclr"), ("aaae", "aaae-authors")]


def report_labels(g, args):
    """Table 2 at the small budget (fine-tuned and probed on 1 % and 10 % of the labels) and the clusters
    (majority, Hungarian, NMI), each with its standard error, what fine-tuning adds to each row's probe, and the
    paired differences of LABEL_PAIRS: markdown lines, and the records for results.json."""
    rows = [r for r in args.rows if r in LABEL_ROWS] if args.label_evals else []
    evals = {(c.row, c.col): read_json(os.path.join(c.eval, "result.json")) or {} for c in g.cells
             if c.table in ("table2", "cluster", "uses")}
    semi = [aa for aa in ("", "aa-") if any(f"{aa}semi-aae-{p}" in args.rows for p in LABEL_FRACTIONS.values())]
    clusters = [r for r in USES_ROWS if "cluster" in r and r in args.rows]
    krows = [r for r in args.rows if (r, "kmeans") in evals]  # k-means on every row's features (split: without Table 2)
    if not rows and not semi and not clusters and not krows:
        return [], {}
    t2 = ["| encoder | " + " | ".join(f"{m}, {p.replace('percent', ' %')}" for p, m in
                                       ((c.split()[1], "fine-tuned" if c.startswith("finetune") else "probe")
                                        for c in TABLE2_COLUMNS)) + " |", "|---" * (1 + len(TABLE2_COLUMNS)) + "|"]
    cl = ["| encoder | majority label top-1 | Hungarian top-1 | NMI | clusters |", "|---|---|---|---|---|"]
    rec2, recc = [], []
    for row in rows:
        cells, rec = [], {"row": row, "label": SMALL_LABELS.get(row, row)}
        for col in TABLE2_COLUMNS:
            r = evals.get((row, col), {})
            top1, n = r.get("top1"), r.get("test_images")
            se = binomial_se(top1, n) if top1 is not None and n else None
            cells.append(fmt_se(top1, se))
            rec[col] = {"top1": top1, "se": se, "train_images": r.get("train_images")}
        t2.append(f"| {SMALL_LABELS.get(row, row)} | " + " | ".join(cells) + " |")
        rec2.append(rec)
    for aa in semi:  # the semi-supervised AAE's own classifier, trained with the same labels during pretraining
        label = f"{aa}semi-supervised AAE, its y head (in the fine-tuned columns)"
        cells, rec = [], {"row": f"{aa}semi-aae", "label": label, "y_head": True}
        for col in TABLE2_COLUMNS:
            mode, pct = col.split()
            r = evals.get((f"{aa}semi-aae-{pct}", "head"), {}) if mode == "finetune" else {}
            top1, n = r.get("top1"), r.get("test_images")
            se = binomial_se(top1, n) if top1 is not None and n else None
            cells.append(fmt_se(top1, se) if mode == "finetune" else "—")
            rec[col] = {"top1": top1, "se": se}
        t2.append(f"| {label} | " + " | ".join(cells) + " |")
        rec2.append(rec)
    kmeans = [(row, "kmeans", SMALL_LABELS.get(row, row)) for row in krows]
    kmeans += [("aavae", "kmeans k16", "aavae, K = 16")] if evals.get(("aavae", "kmeans k16")) else []
    for row, col, label in kmeans + [(r, "head", f"{r}: the AAE's y head") for r in clusters]:
        r = evals.get((row, col), {})
        n = r.get("test_images")
        acc = {k: (r.get(f"{k}_top1"), binomial_se(r[f"{k}_top1"], n) if r.get(f"{k}_top1") is not None else None)
               for k in ("majority", "hungarian")}
        nmi = bootstrap_nmi(r)
        cl.append(f"| {label} | {fmt_se(*acc['majority'])} | {fmt_se(*acc['hungarian'])} | "
                  f"{fmt_se(*nmi, digits=3)} | {fmt(r.get('clusters'))} |")
        recc.append({"row": row, "label": label, "majority_top1": acc["majority"], "hungarian_top1": acc["hungarian"],
                     "nmi": nmi, "clusters": r.get("clusters")})
    hit = lambda row, col, key="correct": evals.get((row, col), {}).get(key)
    gains = ["| encoder | " + " | ".join(f"fine-tuned - probe, {p.replace('percent', ' %')}" for p in LABEL_FRACTIONS.values())
             + " |", "|---" * (1 + len(LABEL_FRACTIONS)) + "|"]
    gain_recs = []
    for row in rows:  # the same labelled images, the same val/ images: paired
        d = {pct: paired_difference(hit(row, f"finetune {pct}"), hit(row, f"linear {pct}")) for pct in LABEL_FRACTIONS.values()}
        gains.append(f"| {SMALL_LABELS.get(row, row)} | " + " | ".join(fmt_se(*v) for v in d.values()) + " |")
        gain_recs.append({"row": row, **d})
    columns = TABLE2_COLUMNS if rows else []  # the split profile's clusters come without Table 2
    pairs = ["| difference | " + "".join(f"{c} | " for c in t2[0].strip("| ").split(" | ")[1:1 + len(columns)])
             + "clusters, majority | Hungarian | NMI |", "|---" * (4 + len(columns)) + "|"]
    pair_recs = []
    for a, b in LABEL_PAIRS:
        if a not in krows or b not in krows:
            continue
        d = {col: paired_difference(hit(a, col), hit(b, col)) for col in columns}
        d["majority"] = paired_difference(hit(a, "kmeans"), hit(b, "kmeans"))
        d["hungarian"] = paired_difference(hit(a, "kmeans", "hungarian_correct"), hit(b, "kmeans", "hungarian_correct"))
        d["nmi"] = bootstrap_nmi(evals.get((a, "kmeans")), evals.get((b, "kmeans")))
        pairs.append(f"| {a} - {b} | " + " | ".join(fmt_se(*d[c]) for c in columns + ["majority", "hungarian"])
                     + f" | {fmt_se(*d['nmi'], digits=3)} |")
        pair_recs.append({"a": a, "b": b, **d})
    lists = {pct: os.path.join(args.output_dir, "label-subsets", f"{pct}.txt") for pct in LABEL_FRACTIONS.values()}
    subsets = {pct: sum(1 for line in open(path) if line.strip()) if os.path.exists(path) else None
               for pct, path in lists.items()}
    lines = [*(["# Table 2 at the small budget: fine-tuned and probed on the same labelled images", "",
               f"Labelled images: {subsets['1percent']} (1 %) and {subsets['10percent']} (10 %) of train/ "
               f"(label-subsets/); fine-tuned {SMALL_FINETUNE_EPOCHS[0.01]} epochs, backbone lr "
               f"{SMALL_BACKBONE_LR_SCALE:g} x Table 2's; scored on {scored(args)}.", "", *t2, ""] if rows or semi else []),
             *(["What fine-tuning adds to the frozen probe on the same labelled images (paired on the same test images):",
                "", *gains, ""] if rows else []),
             "# Cluster accuracy: k-means on the frozen features, read against the labels", "",
             f"Scored on {scored(args)}; NMI ± from 1,000 bootstrap resamples"
             + ("; the clustering AAE's rows: its y head." if clusters else "."),
             "", *cl, "",
             "# Paired differences, " + ("Table 2 and clusters" if columns else "clusters"), "", *pairs, ""]
    return lines, {"table2": rec2, "finetune_over_probe": gain_recs, "clusters": recc, "label_paired_differences": pair_recs}


def read_log(path):
    """A log.jsonl's lines ([] if it is not there)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def mnist_aae_choice(root):
    """The AAE settings' choice from root/SETTING/results.json (the mnist profile's, run with --holdout): each setting
    scored by the mean of semi-100's error and cluster-16's error by the paper's rule on the held-out images, a
    setting with a non-finite training loss left out; returns ({setting: score or None}, the lowest's name)."""
    scores = {}
    for name in MNIST_AAE_CHOICE:
        rows = {r["row"]: r for r in (read_json(os.path.join(root, name, "results.json")) or {}).get("aae", [])}
        logs = [read_log(os.path.join(root, name, "runs", f"mnist-{row}", "log.jsonl")) for row in ("semi-100", "cluster-16")]
        finite = all(logs) and all(math.isfinite(r["loss"]) for log in logs for r in log if "loss" in r)
        errors = [rows.get(row, {}).get("error") for row in ("semi-100", "cluster-16")]
        scores[name] = sum(errors) / 2 if finite and None not in errors else None
    ranked = sorted((v, k) for k, v in scores.items() if v is not None)
    return scores, ranked[0][1] if ranked else None


def report_choice(g, args):
    """The split profile's fine-tuning choice (grid.finetune_choice), OUTPUT/finetune-choice/choice.md and choice.json:
    each recipe's top-1 on the images held out of train/ for each encoder of FINETUNE_CHOICE_ROWS, their mean, whether
    every one of its logs is stable, the probe on the same labels beside them, and at each fraction the recipe the
    rule picks (once every recipe has run)."""
    cells = {(c.row, *c.col): c.eval for c in g.cells if c.table == "choice"}
    if not cells:
        return [], {}
    import linear_eval
    res = {k: read_json(os.path.join(ev, "result.json")) for k, ev in cells.items()}
    rows = FINETUNE_CHOICE_ROWS
    lines = ["| labelled images | recipe | backbone lr | head lr | epochs | " + " | ".join(rows) + " | mean | stable | "
             "largest rise above the first epoch's loss |", "|---" * (8 + len(rows)) + "|"]
    records, chosen = [], {}
    lr = lambda v: "—" if v is None else f"{v:g}"
    for frac, pct in LABEL_FRACTIONS.items():
        mine = []
        for recipe in [*FINETUNE_GRID, "probe"]:
            got = [res.get((row, pct, recipe)) for row in rows]
            tops = [r["top1"] if r else None for r in got]
            mean = sum(tops) / len(tops) if None not in tops else None
            tuned = recipe != "probe"
            logs = [read_log(os.path.join(cells[(row, pct, recipe)], "log.jsonl")) for row in rows] \
                if tuned and mean is not None else None
            ok = all(map(stable, logs)) if logs else None
            # how far the worst log climbs above its first epoch's mean loss (0: never)
            rise = max(max(r["loss"] for r in log) - log[0]["loss"] for log in logs) if logs else None
            lrs = [f * x for f, x in zip(linear_eval.FINETUNE_LR[frac], FINETUNE_GRID[recipe])] if tuned else [None, None]
            rec = {"fraction": pct, "recipe": recipe, "backbone_lr": lrs[0], "head_lr": lrs[1],
                   "epochs": SPLIT_FINETUNE_EPOCHS[frac] if tuned else next((r["epochs"] for r in got if r), None),
                   "top1": dict(zip(rows, tops)), "mean": mean, "stable": ok, "largest_rise": rise,
                   "train_images": next((r["train_images"] for r in got if r), None),
                   "test_images": next((r["test_images"] for r in got if r), None)}
            mine.append(rec)
            label = "probe (cached features)" if not tuned else recipe
            images = "—" if rec["train_images"] is None else f"{rec['train_images']:,}"
            lines.append(f"| {images} | {label} | {lr(rec['backbone_lr'])} | {lr(rec['head_lr'])} | "
                         f"{fmt(rec['epochs'])} | " + " | ".join(fmt(t) for t in tops) + f" | {fmt(mean)} | "
                         + ("—" if ok is None else "yes" if ok else "no") + f" | {fmt(rise, 3)} |")
        tuned = [r for r in mine if r["recipe"] != "probe"]
        if all(r["mean"] is not None for r in tuned) and any(r["stable"] for r in tuned):
            chosen[pct] = max((r for r in tuned if r["stable"]), key=lambda r: r["mean"])["recipe"]
        records += mine
    lines = ["# Fine-tuning's recipe, chosen on images held out of train/ (split profile, --finetune_choice)", "",
             f"{FINETUNE_CHOICE_HOLDOUT:,} images of train/ held out (finetune-choice/holdout-data), the labelled lists drawn "
             "from the rest (finetune-choice/label-subsets); lrs at batch 256, scaled by batch / 256; top-1 on the held-out "
             "images. Rule: at each fraction, the highest mean among the recipes whose every log is stable.", "",
             *lines, "", "Chosen: " + (", ".join(f"{p}: {r}" for p, r in chosen.items()) or "not yet (runs missing)"), ""]
    out = os.path.join(args.output_dir, "finetune-choice")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "choice.md"), "w") as f:
        f.write("\n".join(lines))
    record = {"holdout": FINETUNE_CHOICE_HOLDOUT, "records": records, "chosen": chosen}
    with open(os.path.join(out, "choice.json"), "w") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {out}/choice.md, choice.json")
    return lines, {"finetune_choice": record}


def report_uses(g, args):
    """The adversarial autoencoder's uses at the small budget: the probe and kNN on each run's encoder (as Table
    1's rows), its own evaluation, and the paired differences with AAVAE on the same images: its y head against
    AAVAE fine-tuned on the same labels, its clusters against k-means on AAVAE's features at the same K, its 2-D
    map against AAVAE's; and each augmented use against its plain twin (the encoder seeing x+ or x). Markdown lines
    and the records for results.json."""
    rows = [r for r in USES_ROWS if r in args.rows]
    if not rows:
        return [], {}
    evals = {(c.row, c.col): read_json(os.path.join(c.eval, "result.json")) or {} for c in g.cells
             if c.table in ("uses", "table1", "table2", "cluster")}
    with_se = lambda r, key="top1": (r.get(key), binomial_se(r[key], r["test_images"]) if r.get(key) is not None else None)
    lines = ["| run | linear top-1 (cached features) | kNN top-1 | its own evaluation |", "|---|---|---|---|"]
    records, pairs = [], []
    for row in rows + (["aavae"] if evals.get(("aavae", "map")) else []):
        lin, knn = evals.get((row, "linear"), {}), evals.get((row, "knn"), {})
        mode = "map" if row == "aavae" else uses_mode(row)
        own = evals.get((row, mode), {})
        if mode == "grid":
            text = (f"val/ MSE decoded with the image's own label {fmt(own.get('recon_own_label'), 4)}, with the next "
                    f"class's {fmt(own.get('recon_other_label'), 4)} (grid.png)")
        elif mode == "map":
            text = f"5-NN top-1 in the 2-D map of {own.get('latent', '?')} ({own.get('map', '?')}): {fmt_se(*with_se(own))}"
        elif "semi" in row:
            text = f"y head top-1 {fmt_se(*with_se(own))}"
        else:
            text = (f"y head's clusters: majority {fmt_se(*with_se(own, 'majority_top1'))}, "
                    f"Hungarian {fmt_se(*with_se(own, 'hungarian_top1'))}, NMI {fmt_se(*bootstrap_nmi(own), digits=3)}")
        lines.append(f"| {row} | {fmt_se(*with_se(lin))} | {fmt_se(*with_se(knn))} | {text} |")
        records.append({"row": row, "linear": with_se(lin), "knn": with_se(knn), "own": mode,
                        **{k: own.get(k) for k in ("top1", "majority_top1", "hungarian_top1", "nmi", "recon_own_label",
                                                   "recon_other_label", "clusters", "clusters_used") if k in own}})
        # the paired differences with AAVAE on the same images
        base = evals.get(("aavae", "kmeans" if row.endswith("k10") else "kmeans k16"))  # k-means at the row's K
        if "semi" in row:
            pct = row.rsplit("-", 1)[1]
            against = [("y head - AAVAE fine-tuned on the same labels", own, "correct", evals.get(("aavae", f"finetune {pct}")), "correct"),
                       ("y head - AAVAE's probe on the same labels", own, "correct", evals.get(("aavae", f"linear {pct}")), "correct")]
        elif "cluster" in row:
            against = [(f"majority - k-means on AAVAE (K = {(base or {}).get('clusters')})", own, "correct", base, "correct"),
                       ("Hungarian - the same", own, "hungarian_correct", base, "hungarian_correct")]
        elif mode == "map" and row != "aavae":
            against = [("5-NN in the map - AAVAE's map", own, "correct", evals.get(("aavae", "map")), "correct")]
        else:
            against = []
        if row != "aavae":  # what the use's phases did to the encoder's features
            against += [("probe - AAVAE's probe", lin, "correct", evals.get(("aavae", "linear")), "correct"),
                        ("kNN - AAVAE's kNN", knn, "correct", evals.get(("aavae", "knn")), "correct")]
        for label, mine, key, other, other_key in against:  # (label, this run's result, its key, AAVAE's, its key)
            d = paired_difference(mine.get(key), (other or {}).get(other_key))
            if d[0] is not None:
                pairs.append(f"| {row} | {label} | {fmt_se(*d)} |")
                records[-1].setdefault("paired", {})[label] = d
        if "cluster" in row:
            d = bootstrap_nmi(own, base)
            if d[0] is not None:
                pairs.append(f"| {row} | NMI - k-means on AAVAE's | {fmt_se(*d, digits=3)} |")
                records[-1].setdefault("paired", {})["NMI - k-means on AAVAE's"] = d
    lens = []  # the project's lens: each augmented use against its plain twin, the same images and labels
    for row in rows:
        plain = row.removeprefix("aa-")
        if plain == row or plain not in rows:
            continue
        mine, theirs = (evals.get((r, uses_mode(r)), {}) for r in (row, plain))
        own = [("y head", "correct")] if "semi" in row else [("majority", "correct"), ("Hungarian", "hungarian_correct")]
        for label, a, b, key in [(name, mine, theirs, key) for name, key in own] + [
                ("probe", evals.get((row, "linear")), evals.get((plain, "linear")), "correct"),
                ("kNN", evals.get((row, "knn")), evals.get((plain, "knn")), "correct")]:
            d = paired_difference((a or {}).get(key), (b or {}).get(key))
            if d[0] is not None:
                lens.append(f"| {row} | {label} - {plain}'s | {fmt_se(*d)} |")
                records[rows.index(row)].setdefault("paired", {})[f"{label} - {plain}'s"] = d
        if "cluster" in row:
            d = bootstrap_nmi(mine, theirs)
            if d[0] is not None:
                lens.append(f"| {row} | NMI - {plain}'s | {fmt_se(*d, digits=3)} |")
                records[rows.index(row)].setdefault("paired", {})[f"NMI - {plain}'s"] = d
    out = ["# The adversarial autoencoder's uses at the same budget (methods/aae_uses.py)", "",
           f"Scored on {scored(args)}.", "", *lines, ""]
    if pairs:
        out += ["# Paired differences, the uses against AAVAE", "", "| run | difference | points (NMI: value) |",
                "|---|---|---|", *pairs, ""]
    if lens:
        out += ["# Paired differences, each augmented use against the plain one (the encoder sees x+, the decoder "
                "reconstructs x)", "", "| run | difference with the plain run | points (NMI: value) |", "|---|---|---|", *lens, ""]
    return out, {"uses": records}


FEATURES = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


def units_of(run):
    """What a row's active units count: the autoencoders' latent z (its mean), SimCLR's projection, or the
    supervised encoder's pooled features h, whichever the run's encode() returns, with its size."""
    a = read_json(os.path.join(run, "args.json")) if run else None
    if not a:
        return None
    if a["method"] == "supervised":
        return f"{FEATURES[a['encoder']]} pooled h"
    return f"{a['latent_dim']} {'projection' if a['method'] == 'simclr' else 'z'}"


def scored(args):
    """What the small profile's tables score on: val/, or with --holdout the images held out of train/."""
    return "the val/ images" if not args.holdout else f"the {args.holdout} images held out of train/"


def report_small(g, args):
    """The small profile's Table 1: cached-feature linear probe and kNN top-1 with their standard errors,
    active units and bits per dimension, beside the paper's CIFAR-10 column; the paired differences the
    paper's question turns on, on the same test images; the seed-to-seed spread; Fig. 5's similarities; and
    the curves of the runs' monitor over training (curves.csv, and curves.png with matplotlib)."""
    out = args.output_dir
    os.makedirs(out, exist_ok=True)
    cell = lambda row, col: next((c for c in g.cells if c.table in ("table1", "fig5") and c.row == row and c.col == col), None)
    table1_row = {name: row for row, name in TABLE1_NAMES.items()}  # aaae-authors: the paper's AAAE is that model
    paper_row = lambda row: PAPER_SIMCLR if row == "simclr" else paper_table1(table1_row.get(row, row), "cifar10")
    lines = ["| encoder | linear top-1 (cached features) | kNN top-1 | active units (of the code measured) | "
             "bits per dim | paper, CIFAR-10 linear |",
             "|---|---|---|---|---|---|"]
    results, records, curve_rows = {}, [], []
    for row in (r for r in args.rows if r not in USES_ROWS):
        lin, knn = (read_json(os.path.join(cell(row, c).eval, "result.json")) or {} for c in ("linear", "knn"))
        results[row] = {"linear": lin, "knn": knn}
        run = cell(row, "linear").run
        val = validation(run) if run else {}
        rec = {"row": row, "test_images": lin.get("test_images"), "active_units": val.get("val_active_units"),
               "active_units_of": units_of(run), "val_bpd": val.get("val_bpd"), "paper_cifar10": paper_row(row)}
        for name, r in (("linear", lin), ("knn", knn)):
            top1, n = r.get("top1"), r.get("test_images")
            rec[f"{name}_top1"], rec[f"{name}_se"] = top1, binomial_se(top1, n) if top1 is not None and n else None
        lines.append(f"| {SMALL_LABELS.get(row, row)} | {fmt_se(rec['linear_top1'], rec['linear_se'])} | "
                     f"{fmt_se(rec['knn_top1'], rec['knn_se'])} | "
                     + (f"{rec['active_units']} of {rec['active_units_of']}" if rec["active_units"] is not None else "—")
                     + f" | {fmt(rec['val_bpd'], 4)} | "
                     f"{fmt(rec['paper_cifar10'])} |")
        records.append(rec)
        curve_rows += [{"encoder": row, **r} for r in (curves(run) if run else [])]

    hits = lambda row, probe: results.get(row, {}).get(probe, {}).get("correct")
    both = lambda a, b: tuple(paired_difference(hits(a, p), hits(b, p)) for p in ("linear", "knn"))
    diffs = ["| difference | linear top-1 (points) | kNN top-1 (points) | "
             "the same with AAVAE and AAAE of seed 1 (linear, kNN) |",
             "|---|---|---|---|"]
    pair_records = []
    for a, b in SMALL_PAIRS:
        if a not in results or b not in results:
            continue
        lin, knn = both(a, b)
        a1, b1 = SMALL_SEEDS.get(a, a), SMALL_SEEDS.get(b, b)
        seed1 = both(a1, b1) if (a1, b1) != (a, b) and a1 in results and b1 in results else None
        diffs.append(f"| {a} - {b} | {fmt_se(*lin)} | {fmt_se(*knn)} | "
                     + (f"{fmt_se(*seed1[0])}, {fmt_se(*seed1[1])}" if seed1 else "—") + " |")
        pair_records.append({"a": a, "b": b, "linear": lin, "knn": knn, "seed1": seed1})
    seeds = ["| encoder | linear, seed 0 | seed 1 | seed 1 - seed 0 | kNN, seed 0 | seed 1 | seed 1 - seed 0 |",
             "|---|---|---|---|---|---|---|"]
    seed_records = []
    for row, other in SMALL_SEEDS.items():
        if row in results and other in results:
            cells, rec = [], {"row": row, "seed1_row": other}
            for probe in ("linear", "knn"):
                t0, t1 = results[row][probe].get("top1"), results[other][probe].get("top1")
                diff = paired_difference(hits(other, probe), hits(row, probe))
                cells += [fmt(t0), fmt(t1), fmt_se(*diff)]
                rec[probe] = {"seed0": t0, "seed1": t1, "seed1_minus_seed0": diff}
            seeds.append(f"| {row} | " + " | ".join(cells) + " |")
            seed_records.append(rec)
    if not seed_records:
        seeds = ["No seed-1 run among these rows (`aavae-s1`, `aaae-s1`)."]

    fig5, monitored = [], set()  # the runs' last validation (--val_size images of the held-out split), then the 8 images
    for m in (m for m in ("vae", "aavae") if m in args.rows):
        r = read_json(os.path.join(cell(m, "similarity").eval, "result.json")) or {}
        val = validation(cell(m, "linear").run)
        monitored.add(val.get("val_images"))
        gap = r["sim_same"] - r["sim_diff"] if r.get("sim_same") is not None else None
        fig5.append(f"| {m} | {fmt(val.get('val_sim_same'), 3)} | {fmt(val.get('val_sim_diff'), 3)} | "
                    f"{fmt(r.get('sim_same'), 3)} | {fmt(r.get('sim_diff'), 3)} | {fmt(gap, 3)} |")
    n = monitored.pop() if len(monitored) == 1 else None
    seen = f"{n:,} of {scored(args)}" if n else scored(args)
    fig5 = [f"| method | same-image cosine, last validation ({seen}) | different images | same image, 8 images x 4 "
            "views | different images | gap (8 images) |", "|---|---|---|---|---|---|", *fig5]
    label_lines, label_records = report_labels(g, args)
    uses_lines, uses_records = report_uses(g, args)
    label = f"profile {args.profile}, data {args.data_path}, {args.small_epochs} epochs per run"
    if args.holdout:
        label += f", scored on {args.holdout} images held out of train/ (not val/)"
    if args.pretrain_args:
        label += f", pretraining with {shlex.join(args.pretrain_args)}"
    with open(os.path.join(out, "table1.md"), "w") as f:
        f.write(f"# Table 1 at equal budget (top-1 %, {label})\n\n" + "\n".join(lines) + "\n\n"
                f"± is the standard error of the accuracy over {scored(args)}, sqrt(p (100 - p) / n); bits per dim "
                f"at the runs' last validation ({seen}).\n\n"
                f"# Paired differences on the same images ({scored(args)})\n\n" + "\n".join(diffs) + "\n\n"
                "± is the standard error of the mean per-image difference of the two encoders' hits "
                "(1 right, 0 wrong).\n\n"
                "# Seed to seed\n\n" + "\n".join(seeds) + "\n\n"
                "# Fig. 5: latent similarity of views\n\n" + "\n".join(fig5) + "\n")
        f.write("".join("\n" + line for line in label_lines + uses_lines))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"rows": records, "paired_differences": pair_records, "seed_to_seed": seed_records, **label_records,
                   **uses_records},
                  f, indent=1)
    if curve_rows:
        fields = list(dict.fromkeys(k for r in curve_rows for k in r))
        with open(os.path.join(out, "curves.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(curve_rows)
        plot_curves(curve_rows, os.path.join(out, "curves.png"))
    if label_records.get("table2"):
        plot_labels(label_records, os.path.join(out, "table2.png"), scored(args))
    pictures = [p for p in ("curves.png", "table2.png") if os.path.exists(os.path.join(out, p))]
    print(f"wrote {out}/table1.md, results.json, curves.csv" + "".join(f", {p}" for p in pictures))


def plot_curves(rows, path):
    """Monitor curves over epochs, one line per encoder: held-out linear and kNN top-1, the training
    reconstruction error (MSE per pixel value, one scale for every method), and the Gaussian latents'
    signal-to-noise ratio."""
    plt = pyplot()
    if plt is None:
        return
    panels = [("val_linear_top1", "held-out linear top-1 (%)"), ("val_knn_top1", "held-out kNN top-1 (%)"),
              ("recon_mse", "training reconstruction MSE per pixel"),
              ("val_latent_snr", "latent signal / noise, sum Var(mu) / sum E[sigma^2]")]
    panels = [p for p in panels if any(r.get(p[0]) is not None for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    encoders = list(dict.fromkeys(r["encoder"] for r in rows))
    methods = list(dict.fromkeys(e.removesuffix("-s1") for e in encoders))  # a second seed: its method's colour, dashed
    for ax, (key, title) in zip(axes, panels):
        for encoder in encoders:
            pts = [(r["epoch"], r[key]) for r in rows if r["encoder"] == encoder and r.get(key) is not None]
            if pts:  # one colour per method in every panel
                ax.plot(*zip(*pts), "o--" if encoder.endswith("-s1") else "o-", label=encoder, markersize=3,
                        color=f"C{methods.index(encoder.removesuffix('-s1')) % 10}")
        if key == "val_latent_snr":
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_labels(records, path, scored_on="the val/ images"):
    """Table 2 at the small budget as bars (each row's probe and fine-tuning at 1 % and 10 %, ± their standard
    errors) beside the clusters' majority-label top-1: one picture of what labels do to each encoder. Where the
    AAE's uses have run, as in the tables, the semi-supervised y heads stand in the fine-tuned bars and the
    clustering y heads beside k-means in the cluster bars."""
    plt = pyplot()
    if plt is None:
        return
    rows = records["table2"]
    names = [r["label"].split(" (")[0].replace("-supervised AAE, its", " AAE's") for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [3, 1.4]})
    width = 0.8 / len(TABLE2_COLUMNS)
    for k, col in enumerate(TABLE2_COLUMNS):
        mode, pct = col.split()
        xs = [i + (k - (len(TABLE2_COLUMNS) - 1) / 2) * width for i, r in enumerate(rows) if r[col]["top1"] is not None]
        ys = [(r[col]["top1"], r[col]["se"]) for r in rows if r[col]["top1"] is not None]
        left.bar(xs, [y for y, _ in ys], width, yerr=[e for _, e in ys], capsize=2, color=f"C{k // 2}",
                 alpha=0.45 if mode == "linear" else 0.9,
                 label=f"{'probe' if mode == 'linear' else 'fine-tuned'}, {pct.replace('percent', ' %')} of the labels")
    clusters = records.get("clusters", [])  # k-means on each encoder, then the clustering AAEs' own y heads
    for ax, title in ((left, f"Table 2 at the small budget: top-1 on {scored_on} (%)"),
                      (right, "clusters, majority label: top-1 (%)")):
        ax.set_title(title, fontsize=10)
    head = ["y head" in c["label"] for c in clusters]
    for is_head, color, kind in ((False, "C2", "k-means"), (True, "C4", "the AAE's y head")):
        at = [i for i, h in enumerate(head) if h == is_head]
        if at:
            right.barh(at, [clusters[i]["majority_top1"][0] for i in at], color=color, capsize=2, label=kind,
                       xerr=[clusters[i]["majority_top1"][1] for i in at])
    cluster_names = [(c["row"].rsplit("-k", 1)[0] if h else c["label"].split(" (")[0].split(", K =")[0]) + f", K = {c['clusters']}"
                     for c, h in zip(clusters, head)]
    right.set_yticks(range(len(clusters)), cluster_names, fontsize=8)
    right.legend(fontsize=8, loc="lower right")
    right.invert_yaxis()
    left.set_xticks(range(len(rows)), names, rotation=20, ha="right", fontsize=8)
    left.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None where matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def have_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def figures(records, out):
    """PNG plots of the figure sweeps, when matplotlib is installed (tables are written either way)."""
    plt = pyplot()
    if plt is None:
        return
    panels = [("fig3", "beta"), ("fig4_batch", "batch"), ("fig4_latent", "latent_dim"), ("fig4_logscale", "log_scale")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3))
    for ax, (name, xlabel) in zip(axes, panels):
        pts = [(r["row"], r["top1"]) for r in records if r["table"] == name and r["top1"] is not None]
        if pts:
            ax.plot(*zip(*pts), "o-")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("top-1 (%)")
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "figures.png"), dpi=100)



# ----------------------------------------------------------------------------------------------------
# The mnist profile: the IWAE paper's Table 1 beside this repository's runs of its model

def report_mnist(g, args):
    """OUTPUT/table.md and results.json: each row's NLL (-L_5000 on all of val) and active units beside the paper's
    (3,280 passes, MNIST's test set), with the passes, training k and evaluation k of each; curves.csv and nll.png:
    the runs' validation (-L_100 on 1,000 val images) over passes."""
    from experiments.grid import MNIST_IWAE_ROWS, PAPER_IWAE, PAPER_IWAE_PASSES
    out = args.output_dir
    os.makedirs(out, exist_ok=True)
    lines = ["| row | objective | k (training) | passes | NLL on val, -L_k (nats) | k (evaluation) | active units | "
             f"paper: NLL, {PAPER_IWAE_PASSES:,} passes | paper: active units | NLL - paper's |", "|---" * 10 + "|"]
    records, curve_rows = [], []
    for c in (c for c in g.cells if c.table == "iwae"):
        r = read_json(os.path.join(c.eval, "result.json")) or {}
        method, k = MNIST_IWAE_ROWS[c.row]
        paper_nll, paper_units = PAPER_IWAE[c.row]
        nll = r.get("nll")
        rec = {"row": c.row, "objective": method, "train_samples": k, "passes": r.get("passes"), "nll": nll,
               "eval_samples": r.get("eval_samples"), "active_units": r.get("active_units"), "latent_dim": r.get("latent_dim"),
               "images": r.get("images"), "paper_nll": paper_nll, "paper_active_units": paper_units,
               "nll_minus_paper": nll - paper_nll if nll is not None else None}
        records.append(rec)
        lines.append(f"| {c.row} | {'L_k' if method == 'iwae' else 'ELBO, k-sample mean'} | {k} | {fmt(rec['passes'], 0)} | "
                     f"{fmt(nll)} | {fmt(rec['eval_samples'])} | {fmt(rec['active_units'])} | {fmt(paper_nll)} | "
                     f"{fmt(paper_units)} | {fmt(rec['nll_minus_paper'])} |")
        curve_rows += [{"row": c.row, "pass": v["epoch"], "val_nll": v["val_nll"], "val_active_units": v["val_active_units"]}
                       for v in read_log(os.path.join(c.run, "log.jsonl")) if "val_nll" in v]
    aae_lines, aae_records = report_mnist_aae(g)
    with open(os.path.join(out, "table.md"), "w") as f:
        if records:
            f.write(f"# IWAE's Table 1 on MNIST (one stochastic layer), data {args.data_path}\n\n" + "\n".join(lines) +
                    "\n\nNLL: -L_k per image averaged over all of val, binarised once for every row; the paper's on MNIST's "
                    "test set. Active units: Cov_x(E_q[z_d]) > 0.01 over val.\n\n")
        if aae_records:
            f.write(f"# The AAE's uses on MNIST, data {args.data_path}\n\n" + "\n".join(aae_lines) + "\n\nError: 100 - top-1 on all of val, "
                    "± its standard error; the clustering y read by the paper's rule (each cluster labelled by the "
                    "held-out image y is surest of: rule_images in results.json, images of train the row never trained on) and by "
                    "majority; the paper's on MNIST's test set.\n")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"rows": records, "aae": aae_records}, f, indent=1)
    if curve_rows:
        with open(os.path.join(out, "curves.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(curve_rows[0]))
            w.writeheader()
            w.writerows(curve_rows)
        plot_nll(curve_rows, records, os.path.join(out, "nll.png"))
    print(f"wrote {out}/table.md, results.json" + (", curves.csv" if curve_rows else ""))


def report_mnist_aae(g):
    """The mnist profile's AAE rows: each use's own score on val beside the AAE paper's error."""
    from experiments.grid import MNIST_AAE_ROWS, PAPER_AAE
    cells = [c for c in g.cells if c.table == "aae"]
    if not cells:
        return [], []
    lines = ["| row | labels / clusters | epochs | error on val (%) | error, majority reading (%) | paper's error (%) | "
             "error - paper's |", "|---" * 7 + "|"]
    records = []
    for c in cells:
        r = read_json(os.path.join(c.eval, "result.json")) or {}
        run = read_json(os.path.join(c.run, "args.json")) or {}
        n = r.get("test_images")
        rule = r.get("argmax_rule_top1", r.get("top1")) if c.col == "head" else None
        err = 100 - rule if rule is not None else None
        majority = 100 - r["top1"] if "argmax_rule_top1" in r else None
        paper = PAPER_AAE[c.row]
        extra = MNIST_AAE_ROWS[c.row]
        what = (f"{10 * int(extra[extra.index('--labels_per_class') + 1])} labels" if "--labels_per_class" in extra else
                f"{extra[extra.index('--clusters') + 1]} clusters" if "--clusters" in extra else "—")
        rec = {"row": c.row, "mode": c.col, "what": what, "epochs": run.get("epochs"), "seed": run.get("seed"),
               "error": err, "error_se": binomial_se(err, n) if err is not None and n else None, "majority_error": majority,
               "paper_error": paper, "error_minus_paper": err - paper if err is not None and paper is not None else None,
               "test_images": n, "picture": r.get("picture"), "clusters_used": r.get("clusters_used"),
               "rule_images": r.get("rule_images"), "rule_bank": r.get("rule_bank")}
        if c.col == "grid":  # the decoder reads the label if another label makes its reconstruction worse
            rec.update(recon_own_label=r.get("recon_own_label"), recon_other_label=r.get("recon_other_label"))
        if c.col == "map":  # how far the classes stand apart in the map, and the heads against their margin
            rec.update(map_knn_error=100 - r["top1"] if "top1" in r else None,
                       **{k: r.get(k) for k in ("head_margin", "head_min_distance", "head_pairs_within_margin", "head_pairs")})
        records.append(rec)
        if c.col == "head":
            lines.append(f"| {c.row} | {what} | {fmt(rec['epochs'])} | {fmt_se(err, rec['error_se'])} | {fmt(majority)} | "
                         f"{fmt(paper)} | {fmt(rec['error_minus_paper'])} |")
    figures = [rec for rec in records if rec["mode"] != "head"]
    if figures:
        lines += ["", "The figures' rows (the paper shows pictures, no numbers):", "",
                  "| row | epochs | picture | reading on val |", "|---|---|---|---|"]
        for rec in figures:
            reading = (f"reconstruction error {fmt(rec['recon_own_label'], 4)} with each image's own label, "
                       f"{fmt(rec['recon_other_label'], 4)} with the next class's" if rec["mode"] == "grid" else
                       f"5-nearest-neighbour error in the map {fmt(rec['map_knn_error'])} %; heads' smallest distance "
                       f"{fmt(rec['head_min_distance'])} (margin {fmt(rec['head_margin'])}), "
                       f"{fmt(rec['head_pairs_within_margin'])} of {fmt(rec['head_pairs'])} pairs within it")
            lines.append(f"| {rec['row']} | {fmt(rec['epochs'])} | {rec['picture'] or '—'} | {reading} |")
    return lines, records


def plot_nll(curve_rows, records, path):
    """The validation NLL over passes, one line per row (log-scaled passes, as the schedule's stages are), the paper's
    final NLL of each row dashed in the same colour."""
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, rec in enumerate(records):
        pts = [(r["pass"], r["val_nll"]) for r in curve_rows if r["row"] == rec["row"]]
        if pts:
            colour = f"C{k}"
            ax.plot(*zip(*pts), "-", color=colour, label=f"{rec['row']} (-L_100, 1,000 val images)")
            ax.axhline(rec["paper_nll"], color=colour, ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("passes over the 50,000 training images")
    ax.set_ylabel("NLL (nats)")
    ax.set_title("IWAE Table 1 rows on MNIST; dashed: the paper after 3,280 passes", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
