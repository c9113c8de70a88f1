"""The adversarial autoencoder's other uses (Makhzani et al. 2016, from its Section 4 on), each plain and
augmentation-augmented, as methods of aavae.py's pipeline: its encoder, decoder, augmentation, data, loop,
torchrun, exact resume, preemption and diagnostics; or, with --arch mlp on MNIST, the paper's own fully-connected
networks.

    python -m methods.aae_uses --method aa_semi_aae --subset_file labels.txt --dataset folder --data_path data/cifar10-mini
    python -m methods.aae_uses --method cluster_aae --clusters 16 --dataset cifar10 --data_path data
    python -m methods.aae_uses --method semi_aae --arch mlp --dataset mnist --data_path data/mnist --labels_per_class 10 \\
        --batch_size 100 --base_batch 100 --lr 0.001 --warmup_epochs 0
    torchrun --nproc_per_node=4 -m methods.aae_uses --method aa_dimred_aae --latent_dim 2 --dataset cifar10

The AAE with a Gaussian prior on its code is methods/aae.py's --method aae / aa_aae; its Adversary (a discriminator
with its own optimiser, the encoder as its generator) serves every discriminator here. The four uses, each with an
"aa_" twin whose encoder sees x+ ~ A(x) while the decoder reconstructs the original x:

- supervised_aae (the AAE paper's "supervised" use, style and content apart): the encoder gives z, the decoder
  reads (z, the one-hot label), a discriminator matches z to N(0, I); z is left the style, the label the class.
- semi_aae (semi-supervised classification): the encoder gives y = softmax over the K = classes and a style
  z; the decoder reads (y, z); one discriminator matches y to one-hot samples of Cat(K), another z to
  N(0, I); and a labelled phase trains y with cross-entropy on the labelled subset (--label_fraction,
  --labels_per_class or --subset_file) alone: no step reads the other images' labels.
- cluster_aae (unsupervised clustering): the same without the labelled phase, y over K = --clusters.
- dimred_aae (dimensionality reduction): the decoder reads W y + z, n = --latent_dim numbers (2: a map), W
  the K learned cluster heads, pushed apart by a hinge on their distances (--head_margin) at their own lr.

Each mini-batch is trained in the paper's phases, each its own optimiser step: reconstruction (encoder and decoder,
the loop's optimiser), regularisation (each discriminator, then the encoder as their generator: --disc_lr, --gen_lr)
and, semi-supervised, classification of a labelled batch (the encoder's y alone: --semi_lr); dimred's heads take
their own step on the reconstruction's gradient and the hinge (--head_lr). A phase's share is its learning rate:
there are no loss weights to set. The optimisers are Adam with the ResNet, and with --arch mlp the paper's SGD with
momentum 0.9.
"""
import argparse
import functools
import os
import sys
from types import SimpleNamespace
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import aavae
import linear_eval
from methods import clustering, mlp
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

# The phases' learning rates with --arch mlp (SGD, momentum 0.9): the AAE paper's ratio as public implementations
# quote it (regularisation and classification at ten times the reconstruction's lr, each a tenth lower after epoch 50
# and again after epoch 1,000); the quoted values (0.01 and 0.1) diverged with the summed squared error, so --lr is
# chosen (0.0003 in run_all.sh's mnist profile, on images held out of train: results/mnist-aae-choice) and the
# others default to MLP_PHASE_RATIO times it.
MLP_PHASE_RATIO, MLP_DECAY_EPOCHS = 10, (50, 1000)
# The style z's size with --arch mlp (the paper's MNIST settings as far as they were found: docs/iwae-aae-mnist.md)
MLP_LATENT = {"supervised": 15, "semi": 10, "cluster": 10, "dimred": 2}
HEAD_LR = {"resnet": 1e-2, "mlp": 0.01}  # the cluster heads' own lr (Adam, SGD), enough for them to reach the margin
NO_WEIGHTS = ("adv_weight", "adv_weight_y", "label_weight", "head_weight")  # the merged step's, before the phases


def get_args_parser():
    p = aavae.get_args_parser("methods/aae_uses.py", USES, default="aa_semi_aae")
    p.description = __doc__.split("\n\n")[0]
    method = next(a for a in p._actions if a.dest == "method")
    method.help = "the adversarial autoencoder's use; aa_: the encoder sees x+ ~ A(x), the decoder reconstructs x"
    p.set_defaults(latent_dim=None)  # resolved per use and architecture
    for action in p._actions:
        if action.dest == "dataset":
            action.choices = [*action.choices, "mnist"]
    add_adversary_args(p, "refused: each phase is its own optimiser step, its share set by its lr (--gen_lr)")
    g = p.add_argument_group("the adversarial autoencoder's uses (Makhzani et al. 2016)")
    g.add_argument("--arch", default="resnet", choices=["resnet", "mlp"],
                   help="resnet: aavae.py's encoder and decoder; mlp: the AAE paper's MNIST networks (two hidden layers "
                        "of --mlp_hidden ReLUs each, a sigmoid output), its SGD and phase lrs (--dataset mnist)")
    g.add_argument("--mlp_hidden", type=int, default=None, help="mlp: the width of the hidden layers (default 1000)")
    g.add_argument("--gen_lr", type=float, default=None,
                   help="the regularisation phase's generator step, the encoder's (default: the model's lr; mlp: 0.1)")
    g.add_argument("--semi_lr", type=float, default=None,
                   help="semi: the classification phase's step, the encoder's y (default: the model's lr; mlp: 0.1)")
    g.add_argument("--head_lr", type=float, default=None,
                   help=f"dimred: the cluster heads' own lr (default {HEAD_LR['resnet']:g} with Adam, "
                        f"{HEAD_LR['mlp']:g} with --arch mlp's SGD)")
    g.add_argument("--y_straight_through", action="store_true", default=None,
                   help="semi, cluster, dimred, a diagnostic: y's fooling loss reaches y's logits as if the softmax were "
                        "the identity (its value unchanged), to see whether the softmax's saturation is what keeps y "
                        "in few clusters")
    g.add_argument("--clusters", type=int, default=None,
                   help="cluster, dimred: K, the categories of y (default 16; the AAE paper used 16 and 30 on MNIST); "
                        "the supervised and semi-supervised uses take K = the classes")
    g.add_argument("--label_fraction", type=float, default=None,
                   help="semi: the labelled images, a seeded per-class fraction of the training split (0.01, 0.1)")
    g.add_argument("--labels_per_class", type=int, default=None,
                   help="semi: or this many labelled images of each class, a seeded draw (MNIST's 100 labels: 10)")
    g.add_argument("--subset_file", default=None,
                   help="semi: or a file naming them, one CLASS/FILE (or FILE) a line, as linear_eval.py's")
    g.add_argument("--label_batch", type=int, default=None,
                   help="semi: labelled images per step (global), drawn with replacement from the subset (default "
                        "--batch_size)")
    g.add_argument("--head_margin", type=float, default=None,
                   help="dimred: cluster heads closer than this pay the difference (a hinge; default 4, in units of "
                        "the style's prior standard deviation)")
    for name in NO_WEIGHTS[1:]:  # refused with a sentence (validate), not left to argparse's "unrecognized"
        g.add_argument(f"--{name}", type=float, default=None, help=argparse.SUPPRESS)
    return p


def validate(args):
    """The uses' own flags, with one sentence each for what cannot mean anything, then the adversary's and
    aavae.validate."""
    use = USES[args.method]
    given = lambda *names: [f"--{n}" for n in names if getattr(args, n) is not None]
    if given(*NO_WEIGHTS):
        raise UserError(f"{', '.join(given(*NO_WEIGHTS))} no longer means anything: each phase (reconstruction, "
                        "regularisation, classification) is its own optimiser step, as in the AAE paper, and its share is "
                        "its learning rate: --lr, --disc_lr and --gen_lr, --semi_lr, --head_lr")
    labelled = given("label_fraction", "labels_per_class", "subset_file")
    if use.kind != "semi" and given("label_fraction", "labels_per_class", "subset_file", "label_batch", "semi_lr"):
        raise UserError(f"{', '.join(given('label_fraction', 'labels_per_class', 'subset_file', 'label_batch', 'semi_lr'))}: "
                        f"the labelled phase is the semi-supervised use's, not --method {args.method}'s")
    if use.kind == "semi" and len(labelled) != 1:
        raise UserError("the semi-supervised AAE needs its labelled images: --label_fraction, --labels_per_class or "
                        "--subset_file (one)")
    if args.label_fraction is not None and not 0 < args.label_fraction <= 1:
        raise UserError(f"--label_fraction must lie in (0, 1], got {args.label_fraction}")
    if use.kind not in ("cluster", "dimred") and args.clusters is not None:
        raise UserError(f"--clusters is the clustering and dimensionality-reduction uses' K; --method {args.method} "
                        "takes K = the classes")
    if not use.categorical and given("y_straight_through"):
        raise UserError(f"--y_straight_through: y's categorical discriminator is the semi-supervised, clustering and "
                        f"dimensionality-reduction uses', not --method {args.method}'s")
    if use.kind != "dimred" and given("head_margin", "head_lr"):
        raise UserError("--head_margin and --head_lr are for the cluster heads of --method dimred_aae or aa_dimred_aae")
    if use.kind in ("supervised", "semi") and args.dataset == "stl10":
        raise UserError(f"--method {args.method} needs labels, which STL-10's unlabelled pretraining split does not have")
    if args.target != "original":
        raise UserError("--target augmented is the authors' Table 1 baseline; the AAE's uses reconstruct the original")
    if (args.arch == "mlp") != (args.dataset == "mnist"):
        raise UserError("--arch mlp takes MNIST's 28 x 28 one-channel images (--dataset mnist), and aavae.py's ResNet "
                        "takes three channels: choose --arch mlp with --dataset mnist, --arch resnet otherwise")
    if args.arch == "mlp" and use.augmented:
        raise UserError(f"--method {args.method} augments its encoder's input in colour, which MNIST has not: --arch mlp "
                        "trains the plain uses")
    if args.arch != "mlp" and given("mlp_hidden"):
        raise UserError("--mlp_hidden is the width of --arch mlp's layers")
    for name, low in (("clusters", 2), ("label_batch", 1), ("labels_per_class", 1), ("head_margin", 0), ("mlp_hidden", 1),
                      ("gen_lr", 0), ("semi_lr", 0), ("head_lr", 0)):
        if getattr(args, name) is not None and getattr(args, name) < low:
            raise UserError(f"--{name} must be >= {low}, got {getattr(args, name)}")
    if args.latent_dim is None:
        args.latent_dim = MLP_LATENT[use.kind] if args.arch == "mlp" else 2 if use.kind == "dimred" else 128
    if args.arch == "mlp":  # the paper's MNIST phases: SGD, regularisation and classification at ten times --lr; fp32
        args.disc_lr = MLP_PHASE_RATIO * args.lr if args.disc_lr is None else args.disc_lr
        args.mlp_hidden = args.mlp_hidden or 1000
        args.amp = False if args.amp is None else args.amp
    resolve_adversary(args, None)
    phase_lr = MLP_PHASE_RATIO * args.lr if args.arch == "mlp" else args.lr * args.batch_size / args.base_batch
    args.gen_lr = phase_lr if args.gen_lr is None else args.gen_lr
    aavae.validate(args, aavae.Method(augmented=use.augmented, variational=False))
    if use.kind in ("supervised", "semi"):
        args.clusters = data.num_classes(args)
    args.clusters = args.clusters or 16
    if use.kind == "semi":
        args.label_batch = args.label_batch or args.batch_size
        args.semi_lr = phase_lr if args.semi_lr is None else args.semi_lr
    if use.kind == "dimred":
        args.head_margin = 4.0 if args.head_margin is None else args.head_margin
        args.head_lr = HEAD_LR[args.arch] if args.head_lr is None else args.head_lr
    return args


# ----------------------------------------------------------------------------------------------------
# The model: aavae.py's encoder, projection head and decoder (or the paper's MLPs), with a head for y and (dimred)
# the cluster heads


class LinearHead(nn.Linear):
    """A linear code head with ProjectionHead's interface: h -> (code, None)."""

    def forward(self, h):
        return super().forward(h), None


class MLPDecoder(nn.Module):
    """The paper's MNIST decoder: the code -> two hidden layers of ReLUs -> 784 sigmoid pixels, (N, 1, 28, 28)."""

    def __init__(self, reads, hidden):
        super().__init__()
        self.net = mlp.mlp([reads, hidden, hidden, mlp.PIXELS], nn.ReLU)

    def forward(self, code):
        return torch.sigmoid(self.net(code)).view(-1, 1, 28, 28)


class UsesAAE(nn.Module):
    """x -> h (the ResNet, or the paper's two ReLU layers) -> z = the projection head (the style) and, but for the
    supervised use, y's logits from a second head of the same form; the decoder reads (y, z) concatenated, (one-hot
    label, z) for the supervised use, or W y + z for dimred."""

    def __init__(self, kind, encoder, decoder, stem, latent_dim, image_size, k, arch="resnet", hidden=1000):
        super().__init__()
        self.kind, self.k, self.variational, self.arch = kind, k, False, arch
        reads = latent_dim if kind == "dimred" else latent_dim + k  # the decoder's input size
        if arch == "mlp":
            self.encoder = nn.Sequential(nn.Flatten(), mlp.mlp([mlp.PIXELS, hidden, hidden], nn.ReLU), nn.ReLU())
            self.projection = LinearHead(hidden, latent_dim)
            self.categorical = LinearHead(hidden, k) if kind != "supervised" else None
            self.image_decoder = MLPDecoder(reads, hidden)
        else:
            h = aavae.FEATURE_DIM[encoder]
            self.encoder = aavae.build_encoder(encoder, stem)
            self.projection = aavae.ProjectionHead(h, latent_dim, variational=False)
            self.categorical = aavae.ProjectionHead(h, k, variational=False) if kind != "supervised" else None
            self.image_decoder = aavae.Decoder(decoder, reads, image_size, stem, h)
        self.heads = nn.Parameter(torch.randn(k, latent_dim)) if kind == "dimred" else None  # W: (K, n)
        self.latent_dim = latent_dim if kind == "supervised" else reads  # encode()'s, for the diagnostics
        self.z_dim = latent_dim

    @property
    def decoder(self):
        """What aavae.evaluate decodes encode()'s codes with: None for the supervised use, whose decoder needs
        the label too (its reconstruction is scored by this module's monitor, with the labels)."""
        return None if self.kind == "supervised" else self.image_decoder

    def phase_parameters(self):
        """{phase: its parameters}: reconstruction (all but the heads), generator (the encoder and its code heads),
        classification (the encoder and y's head), heads (dimred's W)."""
        encoder = [*self.encoder.parameters(), *self.projection.parameters()]
        y = [*self.categorical.parameters()] if self.categorical is not None else []
        return {"recon": [p for n, p in self.named_parameters() if n != "heads"], "gen": encoder + y,
                "semi": [*self.encoder.parameters(), *y], "heads": [self.heads] if self.heads is not None else []}

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

    def forward(self, x, labels=None):
        """The reconstruction phase's pass: x_hat from x's own code ((one-hot label, z) with labels, for the
        supervised use), y's logits (None for supervised), z."""
        logits, z = self.infer(x)
        y = F.one_hot(labels, self.k).float() if labels is not None else F.softmax(logits, 1)
        return self.image_decoder(self.code(y, z)), logits, z


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


def make_optimizer(args, params, lr):
    """A phase's optimiser: Adam with the ResNet (as aavae.py's), the paper's SGD with momentum 0.9 with --arch mlp."""
    if args.arch == "mlp":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    return torch.optim.Adam(params, lr=lr, weight_decay=args.weight_decay)


class Phases:
    """What a use keeps beside the model and its reconstruction optimiser: the discriminators (methods/aae.py's
    Adversary: z against N(0, I), y against Cat(K)) with theirs, the generator's, the classification's and the
    heads' optimisers, and the semi-supervised use's labelled subset. The loop checkpoints it as a method's extra
    state. Each optimiser's lr follows the loop's schedule (scale)."""

    def __init__(self, args, device, world, train_split, model):
        use = USES[args.method]
        if use.kind == "semi" and args.label_batch % world:
            raise UserError(f"--label_batch {args.label_batch} (global) does not divide among {world} processes")
        disc_opt = (lambda ps: make_optimizer(args, ps, args.disc_lr)) if args.arch == "mlp" else None
        self.style = Adversary(args, device, world, optimizer=disc_opt)
        self.categorical = (Adversary(args, device, world, dim=args.clusters, sample_prior=categorical_prior,
                                      optimizer=disc_opt) if use.categorical else None)
        params = model.phase_parameters()
        self.opts = {"gen": make_optimizer(args, params["gen"], args.gen_lr)}
        if use.kind == "semi":
            self.opts["semi"] = make_optimizer(args, params["semi"], args.semi_lr)
        if use.kind == "dimred":
            self.opts["heads"] = make_optimizer(args, params["heads"], args.head_lr)
        self.params, self.world = params, world
        self.base_lr = args.lr * args.batch_size / args.base_batch  # the loop's lr before its schedule
        self.labelled, self.label_batch = None, None
        if use.kind == "semi":
            self.labelled = train_split.subset(label_subset(train_split, args))
            self.label_batch = args.label_batch // world

    def optimizers(self):
        return [*self.opts.values(), self.style.disc_opt, *([self.categorical.disc_opt] if self.categorical else [])]

    def follow(self, lr):
        """Every phase's lr at the loop's schedule: the loop's lr this step over its base."""
        for opt in self.optimizers():
            for group in opt.param_groups:
                group.setdefault("base_lr", group["lr"])
                group["lr"] = group["base_lr"] * lr / self.base_lr

    def step(self, name, loss):
        """One phase: its loss's gradients, averaged over processes, and its optimiser's step."""
        opt = self.opts[name] if name in self.opts else name
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
        average_gradients(params, self.world)
        opt.step()

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
                **({"categorical": self.categorical.state_dict()} if self.categorical else {}),
                "opts": {k: v.state_dict() for k, v in self.opts.items()}}

    def load_state_dict(self, state):
        self.style.load_state_dict(state["style"])
        if self.categorical:
            self.categorical.load_state_dict(state["categorical"])
        if "opts" not in state:
            raise UserError("the checkpoint is of the uses before their phases took their own optimiser steps; "
                            "it cannot be continued by this code (start the run afresh with --overwrite)")
        for k, v in state["opts"].items():
            self.opts[k].load_state_dict(v)


def average_gradients(params, world):
    """Under torchrun, each gradient replaced by its mean over the processes (the phases do what DDP would)."""
    if world > 1:
        for p in params:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def label_subset(train_split, args):
    """The semi-supervised use's labelled images: --labels_per_class of each class, or data.label_subset's."""
    if args.labels_per_class:
        return data.per_class_subset(train_split.labels.cpu(), None, args.seed, count=args.labels_per_class)
    return data.label_subset(train_split, args)


def build(args, spec, device, world, train_split):
    """The model (same initial weights on every rank), the reconstruction phase's optimiser, and the Phases."""
    torch.manual_seed(args.seed)
    model = UsesAAE(USES[args.method].kind, args.encoder, args.decoder, args.stem, args.latent_dim, spec.size,
                    args.clusters, args.arch, args.mlp_hidden or 1000)
    if args.arch == "mlp":
        model = model.to(device)
    else:
        model = model.to(device, memory_format=torch.channels_last)
        if args.sync_bn and world > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = make_optimizer(args, model.phase_parameters()["recon"], args.lr)
    return model, optimizer, Phases(args, device, world, train_split, model)


def train_step(model, optimizer, batch, spec, g, args, amp, phases):
    """One step on a batch [x01, (view01,) labels], the AAE paper's phases in turn, each its own optimiser step:
    reconstruction (encoder and decoder; dimred's heads, with their hinge, by their own optimiser), then regularisation
    (each discriminator on the detached codes, then the encoder as the generator of fresh codes) and, semi-supervised,
    the classification of a labelled batch by y. The batch's labels are read by the supervised use alone."""
    use = USES[args.method]
    x01, *view, labels = batch
    x = normalize(x01, spec)  # the decoder's target
    x_in = (normalize(photometric(view[0], spec, g), spec) if use.augmented else x).contiguous(memory_format=torch.channels_last)
    phases.follow(optimizer.param_groups[0]["lr"])
    # reconstruction
    with amp():
        x_hat, _, _ = model(x_in, labels if use.kind == "supervised" else None)
    recon = aavae.reconstruction_loss(x_hat, x)
    parts = {"recon": recon.detach()}
    if args.arch == "mlp":  # the paper's Euclidean cost: summed over an image's pixels (SGD's step scales with it)
        recon = recon * x[0].numel()
    if model.heads is not None:  # the heads: the reconstruction's gradient and the hinge's, their own step
        hinge = head_hinge(model.heads, args.head_margin)
        parts["head_hinge"] = hinge.detach()
        phases.opts["heads"].zero_grad(set_to_none=True)
        recon = recon + hinge  # the hinge reaches the heads alone, which the reconstruction's optimiser does not hold
    phases.step(optimizer, recon)
    if model.heads is not None:
        average_gradients([model.heads], phases.world)
        phases.opts["heads"].step()
    # regularisation: each discriminator, then the encoder as their generator
    with amp():
        logits, z = model.infer(x_in)
    codes = {"z": (phases.style, z)}
    if use.categorical:
        codes["y"] = (phases.categorical, F.softmax(logits, 1))
    fool = 0
    for name, (adversary, code) in codes.items():
        parts[f"disc_loss_{name}"] = adversary.discriminator_step(code.detach(), g)
        if name == "y" and args.y_straight_through:  # y's value, with the gradient its logits would get without the softmax
            code = logits + (code - logits).detach()
        parts[f"gen_loss_{name}"] = adversary.generator_loss(code)
        fool = fool + parts[f"gen_loss_{name}"]
        parts[f"gen_loss_{name}"] = parts[f"gen_loss_{name}"].detach()
    phases.step("gen", fool)
    if use.kind == "semi":  # classification, on the labelled images only
        l01, lview, l_labels = phases.labelled_batch(g)
        l_in = normalize(photometric(lview, spec, g), spec) if use.augmented else normalize(l01, spec)
        with amp():
            l_logits = model.infer(l_in.contiguous(memory_format=torch.channels_last))[0]
        ce = F.cross_entropy(l_logits, l_labels)
        phases.step("semi", ce)
        parts.update(label_ce=ce.detach(), label_top1=100 * (l_logits.detach().argmax(1) == l_labels).float().mean())
    return parts["recon"], parts


# ----------------------------------------------------------------------------------------------------
# Diagnostics during training (beside aavae.evaluate's and its monitor's), and the evaluations `evaluate`
# runs on a finished run: y's head scored (--mode head), the style grid (--mode grid), the 2-D map (--mode map)


@torch.no_grad()
def outputs(model, split, what, spec, amp, batch, keys, rank=0, world=1, workers=0):
    """y's logits ("logits", (N, K)), those and the style z side by side ("logits+z", (N, K + z)) or the decoder's
    code ("code", (N, latent)) of every image of `split` with the evaluation preprocessing, gathered over the ranks
    in the split's order."""
    def encode(x01):
        x = normalize(x01, spec).contiguous(memory_format=torch.channels_last)
        with amp():
            return model.infer(x)[0] if what == "logits" else torch.cat(model.infer(x)[:2], 1) if what == "logits+z" \
                else model.encode(x)[0]
    dim = {"logits": model.k, "logits+z": model.k + model.z_dim}.get(what, model.latent_dim)
    return probe.pooled_features(encode, split, dim, batch, keys, rank, world, workers)


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
                        run["image_size"], run["clusters"], run.get("arch", "resnet"), run.get("mlp_hidden") or 1000)
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
    test_yz = outputs(model, test, "logits+z", **kw)
    test_y = test_yz[:, :model.k].argmax(1)
    # how much the style z varies over the test split (the mean over its dimensions of the standard deviation): near
    # 0 when the encoder has stopped reading its input, which a y in one cluster may also be
    z_std = test_yz[:, model.k:].float().std(0).mean().item()
    if use.kind == "semi":
        if args.rule_data:
            raise UserError("--rule_data belongs to a clustering run: a semi-supervised y is scored as a classifier")
        hit = (test_y == test.labels.to(test_y.device)).to(torch.uint8)
        return {"top1": 100 * hit.double().mean().item(), "test_images": len(test), "classes": classes, "z_std": z_std,
                "features": "the AAE's y head (argmax)", "label_fraction": run["label_fraction"],
                "labels_per_class": run.get("labels_per_class"), "subset_file": run["subset_file"], "correct": hit.tolist()}
    train_logits = outputs(model, train, "logits", **kw).float()
    train_y = train_logits.argmax(1)
    read = clustering.scores(train_y, train.labels, test_y, test.labels, run["clusters"], classes)
    # the paper's own reading: each cluster labelled by the bank image y is surest of (clustering.argmax_rule)
    bank, bank_name = rule_bank(args, run, train, test.device)
    bank_probs = F.softmax(outputs(model, bank, "logits", **kw).float(), 1) if bank is not train else F.softmax(train_logits, 1)
    rule_labels, rule_top1, _ = clustering.argmax_rule(bank_probs, bank.labels, test_y, test.labels)
    return {"top1": read["majority_top1"], "test_images": len(test), "clusters": run["clusters"], "classes": classes,
            "argmax_rule_top1": rule_top1, "argmax_rule_labels": rule_labels.tolist(), "rule_images": len(bank),
            "rule_bank": bank_name, "z_std": z_std,
            "features": "the AAE's y head (argmax)", "clusters_used": int(train_y.unique().numel()),
            "cluster_sizes": torch.bincount(train_y, minlength=run["clusters"]).tolist(),
            "y_confidence": F.softmax(train_logits, 1).amax(1).mean().item(), "prior_verdict": prior_verdict(args.checkpoint, run),
            **{k: v for k, v in read.items() if k != "majority_correct"}, "correct": read["majority_correct"],
            "test_clusters": test_y.tolist(), "test_labels": test.labels.tolist()}


def rule_bank(args, run, train, device):
    """The labelled images the paper's clustering rule reads, and what they are. With --rule_data, that folder's val
    split, which must be images the run never trained on: the run's own --data_path is that folder, whose train split
    is all it saw (run_all.sh --profile mnist makes it with images of train held out). Without, the probe's training
    split: images the model trained on, an optimistic reading."""
    if not args.rule_data:
        return train, "the training split (images the model trained on)"
    if os.path.abspath(run.get("data_path") or "") != os.path.abspath(args.rule_data):
        raise UserError(f"--rule_data {args.rule_data}: the run trained on {run.get('data_path')}, so that folder's val "
                        f"split is not known to be held out of its training images; give the folder the run trained on")
    keys = ("dataset", "image_size", "in_memory", "workers", "seed")
    bank_args = argparse.Namespace(**{k: getattr(args, k) for k in keys}, data_path=args.rule_data, stem="auto",
                                   jitter_strength=None, blur=None)
    bank = aavae.load_data(data.resolve_data(bank_args), device, probe=True)[1]
    return bank, f"the val split of {args.rule_data} ({len(bank)} images held out of the run's training images)"


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
    heads = {}
    if info.get("method") in USES:
        model, run = load_model(args.checkpoint, test.device)
        codes, latent = outputs(model, test, "code", **kw), "W y + z" if model.kind == "dimred" else "the decoder's code"
        if model.heads is not None:  # have the heads reached the margin their hinge asks for?
            gaps = torch.pdist(model.heads.float())  # the K (K - 1) / 2 distances between them
            heads = {"head_margin": run["head_margin"], "head_min_distance": gaps.min().item(),
                     "head_pairs_within_margin": int((gaps < run["head_margin"]).sum()), "head_pairs": len(gaps)}
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
            "picture": picture, **heads, "coords": [[round(v, 4) for v in row] for row in coords.tolist()],
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
    """The uses' model, phases and monitor in aavae.py's loop, without DDP (the phases average their own gradients).
    The ResNet's step FLOPs are counted as aavae.py's autoencoder's (the extra encoder passes of the regularisation
    and classification phases, the heads and the discriminators left out); --arch mlp's are counted whole, and its
    validation and schedule are its own (mlp_validation, the paper's decays)."""
    if args.arch == "mlp":
        return aavae.Recipe(build, train_step, 0, lambda a, s: mlp_flops(a.method, a.latent_dim, a.clusters, a.mlp_hidden),
                            evaluate=mlp_validation, lr_at=mlp_lr, ddp=False)
    flops = functools.partial(aavae.step_flops, method=aavae.Method(USES[args.method].augmented, False))
    return aavae.Recipe(build, train_step, int(USES[args.method].augmented), flops, monitor, ddp=False)


def mlp_lr(step, sched, args):
    """--arch mlp: the loop's lr a tenth lower after each of MLP_DECAY_EPOCHS (the paper's), the phases' with it."""
    epoch = step // sched.steps_per_epoch
    return sched.lr_at(step, args) * 0.1 ** sum(epoch >= e for e in MLP_DECAY_EPOCHS)


@functools.lru_cache(maxsize=None)
def mlp_flops(method, latent_dim, k, hidden):
    """FLOPs per image of one --arch mlp step: the reconstruction pass, the generator's and (semi) the classification's
    encoder passes, forward and backward (the discriminators left out)."""
    from torch.utils.flop_counter import FlopCounterMode
    use = USES[method]
    with torch.device("meta"):
        model = UsesAAE(use.kind, None, None, None, latent_dim, 28, k, "mlp", hidden)
        x, labels = torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        model(x, labels if use.kind == "supervised" else None)[0].sum().backward()
        for _ in range(1 + (use.kind == "semi")):
            logits, z = model.infer(x)
            (z.sum() + (logits.sum() if logits is not None else 0)).backward()
    return counter.get_total_flops() / 2


@torch.no_grad()
def mlp_validation(model, train_split, val_split, args, spec, amp, rank, world):
    """--arch mlp's validation: the reconstruction's mean squared error on the held-out images (each with its label,
    for the supervised use), and the uses' monitor."""
    was = model.training
    model.eval()
    held = val_split.subset(probe.held_out_subset(len(val_split), args).sort().values)
    start, stop = block(len(held), rank, world)
    sums = torch.zeros(2, dtype=torch.float64, device=held.device)
    for x01, labels in held.batches(torch.arange(start, stop), max(1, args.batch_size // world), 0, ("mlp_val", rank)):
        x = normalize(x01, spec)
        x_hat = model(x, labels if model.kind == "supervised" else None)[0]
        sums[0] += ((x_hat - x) ** 2).flatten(1).mean(1).sum()
        sums[1] += len(x)
    s = all_reduce(sums)
    model.train(was)
    return {"val_recon": (s[0] / s[1]).item(), "val_images": int(s[1].item()),
            **monitor(model, train_split, val_split, args, spec, amp, rank, world)}


MODES = {"head": head, "grid": grid, "map": map_2d}


def get_evaluate_parser():
    """linear_eval.py's flags with the uses' modes, and MNIST for --arch mlp's runs."""
    p = linear_eval.get_args_parser("methods/aae_uses.py evaluate", MODES, default="head")
    next(a for a in p._actions if a.dest == "dataset").choices.append("mnist")
    p.add_argument("--rule_data", default=None,
                   help="head, clustering: the folder the run trained on, whose val split (held out of its training "
                        "images) the paper's rule reads; default: the training split")
    return p


def evaluate_main(argv):
    """python -m methods.aae_uses evaluate --mode head|grid|map --checkpoint CKPT ...: linear_eval.py's flags."""
    args = get_evaluate_parser().parse_args(argv)

    def run():
        if not args.checkpoint:
            raise UserError(f"--mode {args.mode} reads a trained model: give the run's --checkpoint")
        if args.rule_data and args.mode != "head":
            raise UserError("--rule_data is read by --mode head alone (the clustering rule's images)")
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
