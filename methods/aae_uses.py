"""The adversarial autoencoder's other uses (Makhzani et al. 2016, from its Section 4 on), each plain and
augmentation-augmented, as methods of aavae.py's pipeline: its encoder, decoder, augmentation, data, loop,
torchrun, exact resume, preemption and diagnostics.

    python -m methods.aae_uses --method aa_semi_aae --subset_file labels.txt --dataset folder --data_path data/cifar10-mini
    python -m methods.aae_uses --method cluster_aae --clusters 16 --dataset cifar10 --data_path data
    torchrun --nproc_per_node=4 -m methods.aae_uses --method aa_dimred_aae --latent_dim 2 --dataset cifar10

The AAE with a Gaussian prior on its code is methods/aae.py's --method aae / aa_aae; its Adversary (a discriminator
with its own Adam, the encoder as its generator) serves every discriminator here. The four uses, each with an
"aa_" twin whose encoder sees x+ ~ A(x) while the decoder reconstructs the original x:

- supervised_aae (the AAE paper's "supervised" use, style and content apart): the encoder gives z, the decoder
  reads (z, the one-hot label), a discriminator matches z to N(0, I); z is left the style, the label the class.
- semi_aae (semi-supervised classification): the encoder gives y = softmax over the K = classes and a style
  z; the decoder reads (y, z); one discriminator matches y to one-hot samples of Cat(K), another z to
  N(0, I); and a labelled phase trains y with cross-entropy on the labelled subset (--label_fraction or
  --subset_file) alone: no step reads the other images' labels (--label_fraction reads them once, to draw).
- cluster_aae (unsupervised clustering): the same without the labelled phase, y over K = --clusters.
- dimred_aae (dimensionality reduction): the decoder reads W y + z, n = --latent_dim numbers (2: a map), W
  the K learned cluster heads, kept apart by a hinge on their distances (--head_margin).

The AAE paper trains in phases on each mini-batch: reconstruction (encoder and decoder), regularisation (each
discriminator, then the encoder as their generator) and, semi-supervised, classification on a labelled batch.
Here, as for methods/aae.py's AAE, the discriminators take their Adam steps first and the encoder and decoder then
take one step of the model's Adam on the sum: reconstruction + --adv_weight x the fool-the-discriminator
losses + --label_weight x the labelled cross-entropy (+ --head_weight x the heads' hinge). The paper's phase
learning rates were for SGD on MNIST's MLPs; with one Adam the weights are what sets the phases' shares.
"""
import functools
import os
import sys
from types import SimpleNamespace
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import aavae
import linear_eval
from methods import clustering
from methods.aae import Adversary, add_adversary_args, resolve_adversary
from aavae import normalize, photometric
from util import data, probe
from util.misc import UserError, all_reduce, block, generator, is_main, load_checkpoint, run_cli


@dataclass(frozen=True)
class Use:
    kind: str  # "supervised", "semi", "cluster" or "dimred"
    augmented: bool  # the encoder sees x+ ~ A(x); the decoder's target stays x

    @property
    def categorical(self):
        """y, a softmax over K, is inferred from x and matched to Cat(K) (every use but the supervised)."""
        return self.kind != "supervised"


USES = {f"{aa}{kind}_aae": Use(kind, bool(aa)) for kind in ("supervised", "semi", "cluster", "dimred") for aa in ("", "aa_")}


# ----------------------------------------------------------------------------------------------------
# Arguments: aavae.py's, and the uses' own

# The weight of the fool-the-discriminator losses when --adv_weight is not given: 0.1 won over methods/aae.py's 1
# on images held out of train/, on both the semi-supervised y head and the clustering y head (docs/aae-uses.md).
ADV_WEIGHT = 0.1


def get_args_parser():
    p = aavae.get_args_parser("methods/aae_uses.py", USES, default="aa_semi_aae")
    p.description = __doc__.split("\n\n")[0]
    method = next(a for a in p._actions if a.dest == "method")
    method.help = "the adversarial autoencoder's use; aa_: the encoder sees x+ ~ A(x), the decoder reconstructs x"
    p.set_defaults(latent_dim=None)  # resolved per use: 128 for z, 2 for dimred's map
    add_adversary_args(p, f"weight of the encoder's fool-the-discriminator losses (default {ADV_WEIGHT}, chosen on "
                          "held-out images)")
    g = p.add_argument_group("the adversarial autoencoder's uses (Makhzani et al. 2016)")
    g.add_argument("--adv_weight_y", type=float, default=None,
                   help="semi, cluster, dimred: the weight of the fooling loss of y's categorical discriminator alone "
                        "(default --adv_weight, which then weighs both)")
    g.add_argument("--y_straight_through", action="store_true", default=None,
                   help="semi, cluster, dimred, a diagnostic: y's fooling loss reaches y's logits as if the softmax were "
                        "the identity (its value unchanged), to see whether the softmax's saturation is what keeps y "
                        "in few clusters")
    g.add_argument("--clusters", type=int, default=None,
                   help="cluster, dimred: K, the categories of y (default 16; the AAE paper used 16 and 30 on MNIST); "
                        "the supervised and semi-supervised uses take K = the classes")
    g.add_argument("--label_fraction", type=float, default=None,
                   help="semi: the labelled images, a seeded per-class fraction of the training split (0.01, 0.1)")
    g.add_argument("--subset_file", default=None,
                   help="semi: or a file naming them, one CLASS/FILE (or FILE) a line, as linear_eval.py's")
    g.add_argument("--label_batch", type=int, default=None,
                   help="semi: labelled images per step (global), drawn with replacement from the subset (default "
                        "--batch_size)")
    g.add_argument("--label_weight", type=float, default=None,
                   help="semi: weight of the labelled phase's cross-entropy in the encoder's loss (default 1)")
    g.add_argument("--head_margin", type=float, default=None,
                   help="dimred: cluster heads closer than this pay the difference (a hinge; default 4, in units of "
                        "the style's prior standard deviation)")
    g.add_argument("--head_weight", type=float, default=None, help="dimred: weight of the heads' hinge (default 1)")
    return p


def validate(args):
    """The uses' own flags, with one sentence each for what cannot mean anything, then the adversary's and
    aavae.validate."""
    use = USES[args.method]
    given = lambda *names: [f"--{n}" for n in names if getattr(args, n) is not None]
    if use.kind != "semi" and given("label_fraction", "subset_file", "label_batch", "label_weight"):
        raise UserError(f"{', '.join(given('label_fraction', 'subset_file', 'label_batch', 'label_weight'))}: the "
                        f"labelled phase is the semi-supervised use's, not --method {args.method}'s")
    if use.kind == "semi" and (args.label_fraction is None) == (args.subset_file is None):
        raise UserError("the semi-supervised AAE needs its labelled images: --label_fraction or --subset_file (one)")
    if args.label_fraction is not None and not 0 < args.label_fraction <= 1:
        raise UserError(f"--label_fraction must lie in (0, 1], got {args.label_fraction}")
    if use.kind not in ("cluster", "dimred") and args.clusters is not None:
        raise UserError(f"--clusters is the clustering and dimensionality-reduction uses' K; --method {args.method} "
                        "takes K = the classes")
    if not use.categorical and given("adv_weight_y", "y_straight_through"):
        raise UserError(f"{', '.join(given('adv_weight_y', 'y_straight_through'))}: y's categorical discriminator is the "
                        f"semi-supervised, clustering and dimensionality-reduction uses', not --method {args.method}'s")
    if use.kind != "dimred" and given("head_margin", "head_weight"):
        raise UserError("--head_margin and --head_weight are for the cluster heads of --method dimred_aae or aa_dimred_aae")
    if use.kind in ("supervised", "semi") and args.dataset == "stl10":
        raise UserError(f"--method {args.method} needs labels, which STL-10's unlabelled pretraining split does not have")
    if args.target != "original":
        raise UserError("--target augmented is the authors' Table 1 baseline; the AAE's uses reconstruct the original")
    for name, low in (("clusters", 2), ("label_batch", 1), ("label_weight", 0), ("head_margin", 0), ("head_weight", 0),
                      ("adv_weight_y", 0)):
        if getattr(args, name) is not None and getattr(args, name) < low:
            raise UserError(f"--{name} must be >= {low}, got {getattr(args, name)}")
    if args.latent_dim is None:
        args.latent_dim = 2 if use.kind == "dimred" else 128
    resolve_adversary(args, ADV_WEIGHT)
    aavae.validate(args, aavae.Method(augmented=use.augmented, variational=False))
    if use.kind in ("supervised", "semi"):
        args.clusters = data.num_classes(args)
    args.clusters = args.clusters or 16
    if use.kind == "semi":
        args.label_batch = args.label_batch or args.batch_size
        args.label_weight = 1.0 if args.label_weight is None else args.label_weight
    if use.kind == "dimred":
        args.head_margin = 4.0 if args.head_margin is None else args.head_margin
        args.head_weight = 1.0 if args.head_weight is None else args.head_weight
    return args


# ----------------------------------------------------------------------------------------------------
# The model: aavae.py's encoder, projection head and decoder, with a head for y and (dimred) the cluster heads


class UsesAAE(nn.Module):
    """x -> h (the ResNet) -> z = the projection head (the style) and, but for the supervised use, y's logits
    from a second head of the same form; the decoder reads (y, z) concatenated, (one-hot label, z) for the
    supervised use, or W y + z for dimred."""

    def __init__(self, kind, encoder, decoder, stem, latent_dim, image_size, k):
        super().__init__()
        h = aavae.FEATURE_DIM[encoder]
        self.kind, self.k, self.variational = kind, k, False
        self.encoder = aavae.build_encoder(encoder, stem)
        self.projection = aavae.ProjectionHead(h, latent_dim, variational=False)
        self.categorical = aavae.ProjectionHead(h, k, variational=False) if kind != "supervised" else None
        self.heads = nn.Parameter(torch.randn(k, latent_dim)) if kind == "dimred" else None  # W: (K, n)
        reads = latent_dim if kind == "dimred" else latent_dim + k  # the decoder's input size
        self.latent_dim = latent_dim if kind == "supervised" else reads  # encode()'s, for the diagnostics
        self.image_decoder = aavae.Decoder(decoder, reads, image_size, stem, h)

    @property
    def decoder(self):
        """What aavae.evaluate decodes encode()'s codes with: None for the supervised use, whose decoder needs
        the label too (its reconstruction is scored by this module's monitor, with the labels)."""
        return None if self.kind == "supervised" else self.image_decoder

    def code(self, y, z):
        """The decoder's input from y (a softmax or one-hot, (N, K)) and z (N, latent)."""
        return y @ self.heads.float() + z if self.kind == "dimred" else torch.cat([y, z], 1)

    def infer(self, x):
        """x -> (y's logits or None, z), float32."""
        h = self.encoder(x)
        logits = self.categorical(h)[0].float() if self.categorical is not None else None
        return logits, self.projection(h)[0].float()

    def encode(self, x):
        """x -> (the code the decoder reads, None): the diagnostics' latent. The supervised use's is z alone."""
        logits, z = self.infer(x)
        return (z if logits is None else self.code(F.softmax(logits, 1), z)), None

    def forward(self, x, n, labels=None):
        """x: the encoder's inputs, the batch's n images first (then the labelled phase's, which go through the
        encoder and y's head only: one BatchNorm batch for both). labels: the batch's, for the supervised use's
        decoder. Returns x_hat (n, C, H, W), y's logits for every input (None for supervised), z (n, latent)
        and the cluster heads themselves (dimred; None otherwise), used here so that DDP sees them."""
        h = self.encoder(x)
        z = self.projection(h[:n])[0].float()
        logits = self.categorical(h)[0].float() if self.categorical is not None else None
        y = F.one_hot(labels, self.k).float() if labels is not None else F.softmax(logits[:n], 1)
        return self.image_decoder(self.code(y, z)), logits, z, self.heads


def head_hinge(heads, margin):
    """The mean over pairs i < j of max(0, margin - |W_i - W_j|): heads closer than the margin are pushed apart
    (the AAE paper's cost on its cluster heads); heads: (K, n)."""
    i, j = torch.triu_indices(len(heads), len(heads), 1, device=heads.device)
    return F.relu(margin - (heads[i] - heads[j]).float().norm(dim=1)).mean()


def categorical_prior(shape, g):
    """One-hot samples of the uniform Cat(K), (N, K): what y's discriminator calls real."""
    return F.one_hot(torch.randint(shape[1], shape[:1], device=g.device, generator=g), shape[1]).float()


# ----------------------------------------------------------------------------------------------------
# The phases of a step


class Phases:
    """What a use keeps beside the model and its Adam: the discriminators (methods/aae.py's Adversary: z against
    N(0, I), y against Cat(K)) with their optimisers, and the semi-supervised use's labelled subset. The loop
    checkpoints it as a method's extra state."""

    def __init__(self, args, device, world, train_split):
        use = USES[args.method]
        if use.kind == "semi" and args.label_batch % world:
            raise UserError(f"--label_batch {args.label_batch} (global) does not divide among {world} processes")
        self.style = Adversary(args, device, world)
        self.categorical = (Adversary(args, device, world, dim=args.clusters, sample_prior=categorical_prior)
                            if use.categorical else None)
        self.labelled, self.label_batch = None, None
        if use.kind == "semi":
            self.labelled = train_split.subset(data.label_subset(train_split, args))
            self.label_batch = args.label_batch // world

    def labelled_batch(self, g):
        """This rank's share of --label_batch images drawn with replacement from the labelled subset, and their
        crops, all from the step's generator g: [x01, view01, labels]. Only these labels are ever read."""
        key = g.initial_seed()  # the step's own seed, on the host: no wait for the device
        where = self.labelled.index_device  # streamed: indices on the host, drawn there from the same seed
        draw = g if torch.device(where).type == g.device.type else torch.Generator(where).manual_seed(key)
        plan = [(key, torch.randint(len(self.labelled), (self.label_batch,), device=where, generator=draw))]
        return next(self.labelled.iterate(plan, 1, ("labelled", key)))

    def state_dict(self):
        return {"style": self.style.state_dict(),
                **({"categorical": self.categorical.state_dict()} if self.categorical else {})}

    def load_state_dict(self, state):
        self.style.load_state_dict(state["style"])
        if self.categorical:
            self.categorical.load_state_dict(state["categorical"])


def build(args, spec, device, world, train_split):
    """The model (same initial weights on every rank), its Adam, and the Phases."""
    torch.manual_seed(args.seed)
    model = UsesAAE(USES[args.method].kind, args.encoder, args.decoder, args.stem, args.latent_dim, spec.size,
                    args.clusters)
    return (*aavae.with_adam(model, args, device, world), Phases(args, device, world, train_split))


def train_step(model, optimizer, batch, spec, g, args, amp, phases):
    """One step on a batch [x01, (view01,) labels]: the discriminators' steps, then the model's on the weighted
    sum of the phases' losses (see the module's docstring). The batch's labels are read by the supervised use
    alone; the semi-supervised use reads those of its labelled batch."""
    use = USES[args.method]
    x01, *view, labels = batch
    x = normalize(x01, spec)  # the decoder's target
    inputs = [normalize(photometric(view[0], spec, g), spec) if use.augmented else x]
    if use.kind == "semi":
        l01, lview, l_labels = phases.labelled_batch(g)
        inputs.append(normalize(photometric(lview, spec, g), spec) if use.augmented else normalize(l01, spec))
    n = len(x)
    with amp():
        x_hat, logits, z, heads = model(torch.cat(inputs).contiguous(memory_format=torch.channels_last), n,
                                        labels if use.kind == "supervised" else None)
    loss = recon = aavae.reconstruction_loss(x_hat, x)
    parts = {"recon": recon.detach()}
    codes = {"z": (phases.style, z)}
    if use.categorical:
        codes["y"] = (phases.categorical, F.softmax(logits[:n], 1))
    weight = {"z": args.adv_weight, "y": args.adv_weight if args.adv_weight_y is None else args.adv_weight_y}
    for name, (adversary, code) in codes.items():  # regularisation: each discriminator, then the generator's share
        parts[f"disc_loss_{name}"] = adversary.discriminator_step(code.detach(), g)
        if name == "y" and args.y_straight_through:  # y's value, with the gradient its logits would get without the softmax
            code = logits[:n] + (code - logits[:n]).detach()
        fool = adversary.generator_loss(code)
        loss = loss + weight[name] * fool
        parts[f"gen_loss_{name}"] = fool.detach()
    if use.kind == "semi":  # the labelled phase, on the labelled images only
        ce = F.cross_entropy(logits[n:], l_labels)
        loss = loss + args.label_weight * ce
        parts.update(label_ce=ce.detach(), label_top1=100 * (logits[n:].detach().argmax(1) == l_labels).float().mean())
    if heads is not None:
        hinge = head_hinge(heads, args.head_margin)
        loss = loss + args.head_weight * hinge
        parts["head_hinge"] = hinge.detach()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, parts


# ----------------------------------------------------------------------------------------------------
# Diagnostics during training (beside aavae.evaluate's and its monitor's), and the evaluations `evaluate`
# runs on a finished run: y's head scored (--mode head), the style grid (--mode grid), the 2-D map (--mode map)


@torch.no_grad()
def outputs(model, split, what, spec, amp, batch, keys, rank=0, world=1, workers=0):
    """y's logits ("logits", (N, K)) or the decoder's code ("code", (N, latent)) of every image of `split`
    with the evaluation preprocessing, gathered over the ranks in the split's order."""
    def encode(x01):
        x = normalize(x01, spec).contiguous(memory_format=torch.channels_last)
        with amp():
            return model.infer(x)[0] if what == "logits" else model.encode(x)[0]
    return probe.pooled_features(encode, split, model.k if what == "logits" else model.latent_dim, batch, keys, rank,
                                 world, workers)


@torch.no_grad()
def labelled_recon(model, split, spec, amp, batch, keys, rank=0, world=1, workers=0):
    """The supervised use's mean squared error on `split`, each image decoded from its z with its own label and
    with the next class's ((c + 1) mod K): the decoder reads the label if the second is the larger."""
    start, stop = block(len(split), rank, world)
    sums = torch.zeros(3, dtype=torch.float64, device=split.device)
    for x01, labels in split.batches(torch.arange(start, stop), batch, 0, keys, workers):
        x = normalize(x01, spec)
        with amp():
            z = model.infer(x.contiguous(memory_format=torch.channels_last))[1]
            for k, label in enumerate((labels, (labels + 1) % model.k)):
                x_hat = model.image_decoder(model.code(F.one_hot(label, model.k).float(), z))
                sums[k] += ((x_hat.float() - x) ** 2).flatten(1).mean(1).sum()
        sums[2] += len(x)
    s = all_reduce(sums)
    return (s[0] / s[2]).item(), (s[1] / s[2]).item()


def monitor(model, train_split, val_split, args, spec, amp, rank, world):
    """The uses' own log.jsonl diagnostics on aavae.evaluate's held-out images, where they have labels (read
    to score, never to train): the semi-supervised y's top-1 (val_y_top1); y's clusters read as k-means' are
    (clustering.scores), against the monitor's labelled training images (val_cluster_top1, NMI); the
    supervised decoder's error with each image's own label and with another's (val_recon, val_recon_other_label)."""
    if not args.monitor_images or bool((val_split.labels < 0).any()):
        return {}
    use = USES[args.method]
    held = val_split.subset(probe.held_out_subset(len(val_split), args).sort().values)
    was_training = model.training
    model.eval()
    kw = dict(spec=spec, amp=amp, batch=max(1, args.batch_size // world), keys=("uses_monitor", args.seed, rank),
              rank=rank, world=world, workers=args.workers)
    if use.kind == "supervised":
        own, other = labelled_recon(model, held, **kw)
        out = {"val_recon": own, "val_recon_other_label": other}
    else:
        y = outputs(model, held, "logits", **kw).argmax(1)
        if use.kind == "semi":
            out = {"val_y_top1": 100 * (y == held.labels.to(y.device)).float().mean().item()}
        else:
            bank = train_split.subset(torch.randperm(len(train_split), generator=generator("cpu", "monitor_bank", args.seed))
                                      [:args.monitor_images].sort().values)
            bank_y = outputs(model, bank, "logits", **kw).argmax(1)
            read = clustering.scores(bank_y, bank.labels, y, held.labels, args.clusters, data.num_classes(args))
            out = {"val_cluster_top1": read["majority_top1"], "val_cluster_nmi": read["nmi"],
                   "val_clusters_used": int(bank_y.unique().numel())}
    model.train(was_training)
    return out


def load_model(checkpoint, device):
    """The model of a checkpoint.pt written by methods/aae_uses.py, its weights loaded strictly, in eval(); and its
    run's arguments."""
    ckpt = load_checkpoint(checkpoint)
    run = ckpt.get("args", {}) if isinstance(ckpt, dict) else {}
    if run.get("method") not in USES or "model" not in ckpt:
        raise UserError(f"{checkpoint} is not a checkpoint.pt of methods/aae_uses.py (its model is needed, not the encoder alone)")
    with torch.device("meta"):  # no initialisation to overwrite
        model = UsesAAE(USES[run["method"]].kind, run["encoder"], run["decoder"], run["stem"], run["latent_dim"],
                        run["image_size"], run["clusters"])
    try:
        model.load_state_dict(ckpt["model"], strict=True, assign=True)
    except RuntimeError as e:
        raise UserError(f"{checkpoint} does not fit the model its arguments describe ({str(e).splitlines()[0][:200]})") from None
    return model.to(device, memory_format=torch.channels_last).eval(), run


def _kw(args, spec, amp, rank, world, stream):
    return dict(spec=spec, amp=amp, batch=max(1, args.batch_size // world), keys=(stream, args.seed, rank), rank=rank,
                world=world, workers=args.workers)


@torch.no_grad()
def head(args, train, test, spec, encoder, info, rank, world, amp, projection=None):
    """evaluate --mode head: y's head of a semi-supervised or clustering AAE, nothing trained here. The
    semi-supervised y is a classifier: top-1 on the test split. A clustering y is read as k-means' clusters
    are (clustering.scores): argmax y on the training split fits each cluster's label, scored on the test split."""
    model, run = load_model(args.checkpoint, test.device)
    use = USES[run["method"]]
    if not use.categorical:
        raise UserError("--mode head scores y's head, which the supervised AAE does not have (its decoder reads the "
                        "label): --mode grid shows what it learned")
    kw = _kw(args, spec, amp, rank, world, "head")
    classes = int(max(train.labels.max(), test.labels.max())) + 1
    test_y = outputs(model, test, "logits", **kw).argmax(1)
    if use.kind == "semi":
        hit = (test_y == test.labels.to(test_y.device)).to(torch.uint8)
        return {"top1": 100 * hit.double().mean().item(), "test_images": len(test), "classes": classes,
                "features": "the AAE's y head (argmax)", "label_fraction": run["label_fraction"],
                "subset_file": run["subset_file"], "correct": hit.tolist()}
    train_logits = outputs(model, train, "logits", **kw).float()
    train_y = train_logits.argmax(1)
    read = clustering.scores(train_y, train.labels, test_y, test.labels, run["clusters"], classes)
    # the paper's own reading: each cluster labelled by the training image y is surest of (clustering.argmax_rule)
    rule_labels, rule_top1, _ = clustering.argmax_rule(F.softmax(train_logits, 1), train.labels, test_y, test.labels)
    return {"top1": read["majority_top1"], "test_images": len(test), "clusters": run["clusters"], "classes": classes,
            "argmax_rule_top1": rule_top1, "argmax_rule_labels": rule_labels.tolist(),
            "features": "the AAE's y head (argmax)", "clusters_used": int(train_y.unique().numel()),
            "cluster_sizes": torch.bincount(train_y, minlength=run["clusters"]).tolist(),
            "y_confidence": F.softmax(train_logits, 1).amax(1).mean().item(), "prior_verdict": prior_verdict(args.checkpoint, run),
            **{k: v for k, v in read.items() if k != "majority_correct"}, "correct": read["majority_correct"],
            "test_clusters": test_y.tolist(), "test_labels": test.labels.tolist()}


def prior_verdict(checkpoint, run):
    """The categorical discriminator's verdict on each cluster's one-hot e_k: the probability it gives e_k of
    being a prior sample. A y that leaves clusters unused is told apart by these: near 1 for the clusters y
    never takes, lower for those it takes more often than Cat(K)'s 1/K."""
    adversary = Adversary(SimpleNamespace(**run), "cpu", 1, dim=run["clusters"], sample_prior=categorical_prior)
    ckpt = load_checkpoint(checkpoint)
    adversary.disc.load_state_dict(ckpt.get("extra", ckpt.get("adversary"))["categorical"]["disc"])  # key before 78679e8
    return torch.sigmoid(adversary.disc(torch.eye(run["clusters"]))).squeeze(1).tolist()


@torch.no_grad()
def grid(args, train, test, spec, encoder, info, rank, world, amp, projection=None):
    """evaluate --mode grid: the supervised AAE's style and content apart. Row i: --num_images test images'
    original, then its z decoded with each class's one-hot label in turn (the first GRID_CLASSES classes; grid.png);
    and over the whole test split, the error with each image's own label and with the next class's."""
    model, run = load_model(args.checkpoint, test.device)
    if USES[run["method"]].kind != "supervised":
        raise UserError("--mode grid draws the supervised AAE's style/content grid; other checkpoints have no label input")
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))[:args.num_images].sort().values
    x01, _ = next(test.batches(idx, len(idx), 0, ("grid", args.seed), args.workers))
    x = normalize(x01, spec).contiguous(memory_format=torch.channels_last)
    with amp():
        z = model.infer(x)[1]
        columns = [model.image_decoder(model.code(F.one_hot(torch.full((len(x),), c, device=x.device), model.k).float(),
                                                  z)).float() for c in range(min(model.k, GRID_CLASSES))]
    if is_main():
        picture = torch.stack([x.float(), *columns], 1).flatten(0, 1)
        torchvision.utils.save_image(aavae.denormalize(picture, spec).cpu(), os.path.join(args.output_dir, "grid.png"),
                                     nrow=1 + len(columns), padding=1)
    own, other = labelled_recon(model, test, **_kw(args, spec, amp, rank, world, "grid"))
    return {"picture": "grid.png", "num_images": len(idx), "classes": model.k, "test_images": len(test),
            "recon_own_label": own, "recon_other_label": other}


@torch.no_grad()
def map_2d(args, train, test, spec, encoder, info, rank, world, amp, projection):
    """evaluate --mode map: the test split in two dimensions, coloured by class (map.png, with matplotlib),
    the coordinates in result.json. A dimensionality-reduction AAE's code W y + z (its two numbers, or two
    principal components for n > 2); any other autoencoder's latent mean mu by its two principal components (as
    AAVAE's). top1: a leave-one-out 5-nearest-neighbour vote in the map, how far the classes stand apart there."""
    kw = _kw(args, spec, amp, rank, world, "map")
    if info.get("method") in USES:
        model, run = load_model(args.checkpoint, test.device)
        codes, latent = outputs(model, test, "code", **kw), "W y + z" if model.kind == "dimred" else "the decoder's code"
    elif projection is not None:
        encoder.eval()  # BatchNorm's running statistics: a test image's point does not depend on its batch
        def encode(x01):
            with amp():
                return projection(encoder(normalize(x01, spec).contiguous(memory_format=torch.channels_last)).float())[0]
        codes, latent = probe.pooled_features(encode, test, projection.mu.out_features, kw["batch"], kw["keys"], rank,
                                              world, args.workers), "mu"
    else:
        raise UserError("--mode map needs an autoencoder's checkpoint.pt (its projection head gives mu); an encoder.pth has none")
    codes = codes.float()
    how = "the code itself" if codes.shape[1] == 2 else "two principal components"
    if codes.shape[1] != 2:  # PCA: the centred codes projected on their two leading right singular vectors
        centred = codes - codes.mean(0)
        coords = centred @ torch.linalg.svd(centred, full_matrices=False)[2][:2].T
    else:
        coords = codes
    labels = test.labels.to(coords.device)
    hit = torch.empty(len(coords), dtype=torch.uint8, device=coords.device)
    for at in range(0, len(coords), 4096):  # 4,096 rows of distances at a time: no N x N matrix
        d = torch.cdist(coords[at:at + 4096], coords)
        d[torch.arange(len(d)), torch.arange(at, at + len(d))] = float("inf")  # leave each point out of its own vote
        hit[at:at + len(d)] = labels[d.topk(5, largest=False).indices].mode(1).values == labels[at:at + len(d)]
    names = sorted({os.path.basename(os.path.dirname(p)) for p in test.paths}) if test.paths else None
    picture = draw_map(coords.cpu(), labels.cpu(), names, f"{info.get('method') or 'encoder'}: {latent}, {how}",
                       os.path.join(args.output_dir, "map.png")) if is_main() else None
    return {"top1": 100 * hit.double().mean().item(), "test_images": len(test), "latent": latent, "map": how,
            "picture": picture, "coords": [[round(v, 4) for v in row] for row in coords.tolist()],
            "test_labels": labels.tolist(), "correct": hit.tolist()}


GRID_CLASSES = 20  # the grid's columns at most: ImageNet's 1,000 would make a picture nobody reads


def draw_map(coords, labels, names, title, path):
    """A scatter of coords (N, 2) coloured by label, with a legend; None (and no file) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 6))
    for c in labels.unique().tolist():
        pts = coords[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=5, color=plt.cm.tab10(c % 10), label=names[c] if names else str(c))
    ax.legend(markerscale=3, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return os.path.basename(path)


def recipe(args):
    """The uses' model, step and monitor in aavae.py's loop; the step's FLOPs are counted as aavae.py's
    autoencoder's (the heads and discriminators, small MLPs, left out)."""
    flops = functools.partial(aavae.step_flops, method=aavae.Method(USES[args.method].augmented, False))
    return aavae.Recipe(build, train_step, int(USES[args.method].augmented), flops, monitor)


MODES = {"head": head, "grid": grid, "map": map_2d}


def evaluate_main(argv):
    """python -m methods.aae_uses evaluate --mode head|grid|map --checkpoint CKPT ...: linear_eval.py's flags."""
    args = linear_eval.get_args_parser("methods/aae_uses.py evaluate", MODES, default="head").parse_args(argv)

    def run():
        if not args.checkpoint:
            raise UserError(f"--mode {args.mode} reads a trained model: give the run's --checkpoint")
        return linear_eval.evaluate(linear_eval.validate(args), MODES)

    return run_cli("methods/aae_uses.py evaluate", run)


def main(argv=None):
    """Trains a use; `evaluate` first evaluates a trained one."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["evaluate"]:
        return evaluate_main(argv[1:])
    return aavae.run("methods/aae_uses.py", get_args_parser().parse_args(argv), validate, recipe)


if __name__ == "__main__":
    main()
