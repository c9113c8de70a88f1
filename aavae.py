"""AAVAE: Augmentation-Augmented Variational Autoencoders -- pretraining.

A plain-PyTorch reproduction of Falcon, Jha, Koker & Cho, "AAVAE: Augmentation-Augmented Variational
Autoencoders" (arXiv 2107.12329). A VAE's encoder sees an augmented view x+ ~ A(x), its decoder must
reconstruct the original x, and the KL term of the ELBO is dropped: Eq. 3 of the paper's Section 3.2.

    # one process (GPU if present, else CPU)
    python aavae.py --dataset cifar10 --data_path data --output_dir runs/cifar10-aavae
    # several GPUs (NCCL); on CPU the same line runs with gloo
    torchrun --nproc_per_node=4 aavae.py --dataset imagenet --data_path /data/imagenet --batch_size 512
    # any ImageFolder tree with train/ and val/
    python aavae.py --dataset folder --data_path data/cifar10-mini --encoder resnet18 --batch_size 32

The file reads in the paper's order: arguments; the model (Appendix A.1, "Architecture"); the objective, one
function per equation (Eqs. 1-3); the augmentation (Appendix A.1, "Augmentation pipeline"), each op defined
plainly, then fused for speed; the training step, from a loaded batch to the optimiser; the held-out
diagnostics (Figs. 2 and 5); the schedule and the loop. Table 1's baselines (AE, AAAE, VAE) are the same code
with --method. Methods beyond the paper (methods/: SimCLR and supervised controls, IWAE, the adversarial
autoencoder) reuse this loop through `train(args, recipe)`; this file imports none of them. Loading the data,
the run directory and the process group are util/'s.

Re-running the same command resumes from OUTPUT_DIR/checkpoint.pt. Every random draw of a run (data order,
crop boxes, colour jitter, reparameterisation noise) is a pure function of (stream, seed, epoch or step,
rank), so a resumed run is bit-identical to an uninterrupted one on a CPU, and a checkpoint needs no RNG state.
"""
import argparse
import contextlib
import functools
import math
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from util import data, probe
from util.misc import (Parser, Preempted, SavePolicy, UserError, algorithms, all_reduce, autocast, broadcast_buffers,
                       default_workers, generator, is_main, peak_tflops, print0, run_cli, setup_distributed,
                       wrap_ddp, write_log)
from util.rundir import StepLog, announce, finish, open_output_dir, resolve_amp, restore, save_checkpoint


@dataclass(frozen=True)
class Method:
    """What tells Table 1's autoencoders apart."""
    augmented: bool  # the encoder sees x+ ~ A(x) instead of x (the decoder's target stays x)
    variational: bool  # z ~ q(z|x) = N(mu, exp(log_var)) and a Gaussian likelihood; else z = mu and the MSE

    @property
    def views(self):
        """Augmented crops of each image a training step needs."""
        return int(self.augmented)


METHODS = {
    "ae": Method(augmented=False, variational=False),  # Table 1
    "aaae": Method(augmented=True, variational=False),
    "vae": Method(augmented=False, variational=True),  # beta = 1 by default
    "aavae": Method(augmented=True, variational=True),  # beta = 0 by default: Eq. 3, the KL only logged
}
FEATURE_DIM = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
DECODER_FOR = {"resnet18": "decoder18", "resnet34": "decoder34", "resnet50": "decoder50"}

# Arguments that may differ when a run is resumed: they do not change what the steps compute. --in_memory is not
# one: the memory path crops a batch on the device from one stream, the streamed path each image in PIL from its own.
RESUMABLE_ARGS = {"epochs", "max_steps", "output_dir", "data_path", "log_every", "val_every", "save_every",
                  "val_size", "val_samples", "workers", "compile", "overwrite", "amp",
                  "save_every_minutes", "deterministic", "monitor_images"}


# ----------------------------------------------------------------------------------------------------
# Arguments

def get_args_parser(prog="aavae.py", methods=METHODS, default="aavae"):
    """The paper's flags. A method of methods/ passes its own `methods` (the --method choices) and adds its flags."""
    p = Parser(prog, description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("method (Section 3, Table 1)")
    g.add_argument("--method", default=default, choices=sorted(methods),
                   help="ae/aaae: deterministic latent, MSE; vae/aavae: Gaussian latent and likelihood. "
                        "The 'aa' variants feed the encoder an augmented view; the target is the original")
    g.add_argument("--target", default="original", choices=["original", "augmented"],
                   help="the decoder's target. augmented reproduces the authors' AE/AAAE baseline, which "
                        "reconstructed the augmented view (their Table 1 AAAE row); for methods whose encoder sees one")
    g.add_argument("--beta", type=float, default=None,
                   help="KL weight; default 1 for vae and 0 for aavae (Fig. 3 sweeps it for aavae)")
    g.add_argument("--log_scale", type=float, default=0.0,
                   help="log-VARIANCE of the Gaussian likelihood, sigma = exp(log_scale / 2) (Fig. 4d: [-5, 2])")
    g.add_argument("--learn_scale", action=argparse.BooleanOptionalAction, default=False,
                   help="learn log_scale instead of fixing it (Fig. 2)")

    g = p.add_argument_group("model (Appendix A.1, Architecture)")
    g.add_argument("--encoder", default="resnet50", choices=sorted(FEATURE_DIM))
    g.add_argument("--decoder", default=None, choices=sorted(set(DECODER_FOR.values())),
                   help="default mirrors the encoder (Fig. 4c varies it)")
    g.add_argument("--latent_dim", type=int, default=128, help="size of z (Fig. 4b: 64-512)")
    g.add_argument("--stem", default="auto", choices=["auto", "cifar", "stl", "imagenet"],
                   help="first conv/maxpool of the encoder; auto follows the dataset, or the image size for folder")

    g = p.add_argument_group("data (Appendix A.1, Datasets and Augmentation pipeline)")
    g.add_argument("--dataset", default="cifar10", choices=["cifar10", "stl10", "imagenet", "folder"])
    g.add_argument("--data_path", default="data",
                   help="torchvision download root for cifar10/stl10; an ImageFolder tree with train/ (and val/ for folder)")
    g.add_argument("--image_size", type=int, default=None,
                   help="folder only: side of the square training image (default: the first image's shorter side)")
    g.add_argument("--in_memory", action=argparse.BooleanOptionalAction, default=None,
                   help="hold the uint8 images on the training device (default: yes unless over 8 GiB; never for imagenet)")
    g.add_argument("--jitter_strength", type=float, default=None,
                   help="colour jitter s; default 0.5 for images of 64 px or less, 1.0 above")
    g.add_argument("--blur", action=argparse.BooleanOptionalAction, default=None,
                   help="Gaussian blur in the augmentation; default off for images of 64 px or less, on above")
    g.add_argument("--workers", type=int, default=default_workers(),
                   help="DataLoader workers per process, for decoding folders that are streamed or loaded into memory "
                        "(default: the cores per process on this node, less one)")

    g = p.add_argument_group("optimisation (Appendix A.1, Optimization and Hyperparameters)")
    g.add_argument("--batch_size", type=int, default=256,
                   help="GLOBAL batch over all processes; each process takes batch_size / world_size")
    g.add_argument("--lr", type=float, default=2.5e-4, help="Adam learning rate at a global batch of --base_batch")
    g.add_argument("--base_batch", type=int, default=256,
                   help="the lr actually used is lr * batch_size / base_batch (Goyal et al. linear scaling)")
    g.add_argument("--weight_decay", type=float, default=0.0)
    g.add_argument("--epochs", type=int, default=3200, help="400-3200 on CIFAR-10, 3200 on STL-10")
    g.add_argument("--warmup_epochs", type=float, default=10.0, help="linear warm-up length")
    g.add_argument("--schedule", default="constant", choices=["constant", "cosine", "linear"],
                   help="after warm-up: the paper keeps the lr constant")
    g.add_argument("--max_steps", type=int, default=None,
                   help="stop after this many optimiser steps (the schedule still follows --epochs)")

    g = p.add_argument_group("run")
    g.add_argument("--output_dir", default=None, help="default runs/DATASET-METHOD")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh in an output_dir that holds a run with different arguments")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--log_every", type=int, default=50, help="steps between log.jsonl lines")
    g.add_argument("--val_every", type=int, default=10, help="epochs between validations (and one at the end)")
    g.add_argument("--save_every", type=int, default=10, help="epochs between checkpoints (and one at the end)")
    g.add_argument("--save_every_minutes", type=float, default=None,
                   help="also checkpoint when this many minutes have passed since the last save (mid-epoch too). "
                        "SIGTERM or SIGUSR1 always saves at the current step and exits with status 3")
    g.add_argument("--val_size", type=int, default=1024, help="held-out images used by the diagnostics (0: all)")
    g.add_argument("--monitor_images", type=int, default=None,
                   help="at each validation, a linear head and a kNN vote on the pooled features of this many "
                        "(seeded) labelled training images are scored on the held-out images: val_linear_top1, "
                        "val_knn_top1 (0: off; default 1,000, or 10 per class where that is more: 10,000 on ImageNet)")
    g.add_argument("--val_samples", type=int, default=16,
                   help="importance samples k for the bits-per-dimension estimate (VAE family)")
    g.add_argument("--sync_bn", action=argparse.BooleanOptionalAction, default=False,
                   help="synchronise BatchNorm over processes; on reproduces a one-GPU run's statistics")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: a resumed run's own; a new run's on with CUDA and on CPUs with "
                        "native bf16, AVX512-BF16 or AMX, off where a CPU would emulate it)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile the model")
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=False,
                   help="torch's deterministic algorithms: bit-identical resumes on a GPU too (on a CPU they are "
                        "already), at some cost in speed")
    return p


def validate(args, method=None):
    """Rejects flag combinations that cannot mean anything, with one sentence each, then resolves every
    default once, here: beta, the decoder, the data's image size, stem, augmentation strength and memory path
    (data.resolve_data), the monitor's images and the output directory. --amp alone waits for the output
    directory (resolve_amp): a resumed run keeps its precision. What args (and so args.json) holds is what the
    run does. A method of methods/ checks its own flags first and passes its Method."""
    method = method or METHODS[args.method]
    if not method.variational and (args.beta or args.learn_scale):
        raise UserError(f"--method {args.method} has a deterministic latent: --beta and --learn_scale need a Gaussian one")
    if args.target == "augmented" and not method.augmented:
        raise UserError(f"--target augmented needs an augmented view, which --method {args.method} does not make")
    if args.beta is not None and args.beta < 0:
        raise UserError(f"--beta must be >= 0, got {args.beta}")
    for name in ("latent_dim", "batch_size", "epochs", "base_batch", "log_every", "val_every", "save_every",
                 "val_samples"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name} must be positive, got {getattr(args, name)}")
    if args.max_steps is not None and args.max_steps <= 0:
        raise UserError(f"--max_steps must be positive, got {args.max_steps}")
    if args.save_every_minutes is not None and args.save_every_minutes <= 0:
        raise UserError(f"--save_every_minutes must be positive, got {args.save_every_minutes}")
    if args.lr <= 0 or args.warmup_epochs < 0 or args.val_size < 0 or (args.monitor_images or 0) < 0:
        raise UserError("--lr must be positive and --warmup_epochs, --val_size, --monitor_images non-negative")
    args.beta = args.beta if args.beta is not None else 1.0 if args.method == "vae" else 0.0
    args.decoder = args.decoder or DECODER_FOR[args.encoder]
    data.resolve_data(args)
    if args.monitor_images is None:  # enough labelled images per class for the monitor's head and kNN vote
        args.monitor_images = max(1000, 10 * data.num_classes(args))
    args.output_dir = args.output_dir or os.path.join("runs", f"{args.dataset}-{args.method}")
    return args


# ----------------------------------------------------------------------------------------------------
# The model (Appendix A.1, "Architecture"): a torchvision ResNet encoder, a projection head as SimCLR's,
# and an inverted ResNet without BatchNorm as the decoder. Layer details follow the authors' code.

class GlobalMeanPool(nn.Module):
    """(N, C, H, W) -> (N, C): ResNet's adaptive average pool to 1 x 1, written as a mean. The same function,
    but its CUDA backward is deterministic, which adaptive_avg_pool2d's is not (--deterministic needs that)."""

    def forward(self, x):
        return x.mean((2, 3))


def build_encoder(name, stem):
    """torchvision ResNet without its classifier; returns pooled features h. The stem follows the dataset:
    CIFAR-10 a 3x3 stride-1 first conv and no maxpool, STL-10 the 7x7 stride-2 conv and no maxpool, ImageNet
    torchvision's own."""
    net = getattr(torchvision.models, name)(weights=None)
    net.avgpool = GlobalMeanPool()
    if stem == "cifar":
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    if stem in ("cifar", "stl"):
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


class ProjectionHead(nn.Module):
    """Linear(h, h) -> BN -> ReLU, then bias-free Linear(h, latent) for mu (and log_var if variational)."""

    def __init__(self, h, latent_dim, variational):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(h, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True))
        self.mu = nn.Linear(h, latent_dim, bias=False)
        self.log_var = nn.Linear(h, latent_dim, bias=False) if variational else None

    def forward(self, h):
        t = self.trunk(h)
        return self.mu(t), (self.log_var(t) if self.log_var is not None else None)


class DecoderBlock(nn.Module):
    """Residual block of the inverted ResNet, no BatchNorm, convs with bias. With `upsample` (a resize),
    the resize comes before the 3x3 conv and the skip path is resize + 1x1 conv."""

    def __init__(self, cin, planes, bottleneck, upsample=None):
        super().__init__()
        cout = planes * (4 if bottleneck else 1)
        self.upsample = upsample or nn.Identity()
        if bottleneck:  # 1x1 -> (resize) -> 3x3 -> 1x1
            self.pre = nn.Sequential(nn.Conv2d(cin, planes, 1), nn.ReLU(inplace=True))
            self.body = nn.Sequential(nn.Conv2d(planes, planes, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(planes, cout, 1))
        else:  # (resize) -> 3x3 -> 3x3
            self.pre = nn.Identity()
            self.body = nn.Sequential(nn.Conv2d(cin, planes, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(planes, cout, 3, padding=1))
        self.skip = nn.Sequential(self.upsample, nn.Conv2d(cin, cout, 1)) if upsample or cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.body(self.upsample(self.pre(x))) + self.skip(x))


class Decoder(nn.Module):
    """Inverted ResNet: z -> MLP -> (h/16, 4, 4) -> 1x1 conv -> four residual stages -> image.

    h is the ENCODER's feature size (512 for ResNet-18/34, 2048 for ResNet-50), whichever decoder is chosen,
    as in the authors' code: Fig. 4c swaps the decoder behind a fixed ResNet-50, and only the stages change.

    Stage 1 resizes to input_size / f (f = 8, x2 for a stride-2 stem, x2 again for a kept maxpool);
    stages 2-4 upsample x2 each; the stem's downsamplings are undone at the end.
    """

    LAYOUT = {"decoder18": ([2, 2, 2, 2], False), "decoder34": ([3, 6, 4, 3], False),
              "decoder50": ([3, 6, 4, 3], True)}

    def __init__(self, name, latent_dim, image_size, stem, h):
        super().__init__()
        blocks, bottleneck = self.LAYOUT[name]
        self.h = h
        self.stem = stem
        self.mlp = nn.Sequential(nn.Linear(latent_dim, h), nn.ReLU(inplace=True), nn.Linear(h, h), nn.ReLU(inplace=True))
        self.conv_in = nn.Sequential(nn.Conv2d(h // 16, h, 1), nn.ReLU(inplace=True))
        stages, cin = [], h
        for k, (n, planes) in enumerate(zip(blocks, [256, 128, 64, 32])):
            up = nn.Upsample(size=image_size // data.STEM_FACTOR[stem]) if k == 0 else nn.Upsample(scale_factor=2)
            layer = [DecoderBlock(cin, planes, bottleneck, up)]
            cin = planes * (4 if bottleneck else 1)
            layer += [DecoderBlock(cin, planes, bottleneck) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layer))
        self.stages = nn.Sequential(*stages)
        self.conv_out = nn.Sequential(nn.Conv2d(cin, 64, 3, padding=1), nn.ReLU(inplace=True))
        self.final = nn.Conv2d(64, 3, 3, padding=1)

    def forward(self, z):
        x = self.mlp(z).view(-1, self.h // 16, 4, 4)
        x = self.stages(self.conv_in(x))
        if self.stem == "imagenet":  # undo the maxpool
            x = F.interpolate(x, scale_factor=2)
        x = self.conv_out(x)
        if self.stem != "cifar":  # undo the stride-2 first conv
            x = F.interpolate(x, scale_factor=2)
        return self.final(x)


class AutoEncoder(nn.Module):
    """Encoder + projection head + decoder. Variational: z = mu + sigma * eps; otherwise z = head(h)."""

    def __init__(self, encoder, decoder, stem, latent_dim, image_size, variational, log_scale=0.0, learn_scale=False):
        super().__init__()
        self.encoder = build_encoder(encoder, stem)
        self.projection = ProjectionHead(FEATURE_DIM[encoder], latent_dim, variational)
        self.decoder = Decoder(decoder, latent_dim, image_size, stem, FEATURE_DIM[encoder])
        self.variational, self.latent_dim = variational, latent_dim
        # Log-variance of p(x|z); a parameter even when fixed, so that checkpoints look the same.
        self.log_scale = nn.Parameter(torch.tensor(float(log_scale)), requires_grad=learn_scale)

    def encode(self, x):
        """x: (N, 3, H, W) -> mu, log_var: (N, latent) each (log_var None for the AE family)."""
        mu, log_var = self.projection(self.encoder(x))
        return mu, (log_var.float().clamp(*LOG_VAR_RANGE) if log_var is not None else None)

    def forward(self, x_aug, eps=None):
        """x_aug: encoder input (N, 3, H, W); eps: standard normal noise (N, latent), or (k, N, latent) for k
        samples per image. Returns x_hat ((N, ...) or (k, N, ...)), mu, log_var and log_scale (returned so
        that a learned scale takes part in the DDP forward like any parameter)."""
        mu, log_var = self.encode(x_aug)
        z = reparameterize(mu, log_var, eps) if self.variational else mu
        return self.decoder(z.flatten(0, -2)).unflatten(0, z.shape[:-1]), mu, log_var, self.log_scale


# ----------------------------------------------------------------------------------------------------
# The objective (Section 3). One function per equation; likelihoods and KL in float32, summed over
# pixels / latent dimensions per image, then averaged over the batch. x is always the original image.
# The log-weight and the bound L_k serve the held-out bits per dimension.

LOG_VAR_RANGE = (-10.0, 10.0)  # clamp for log_var and a learned log_scale: exp() stays far from overflow


def reparameterize(mu, log_var, eps):
    """z = mu + exp(log_var / 2) * eps, eps ~ N(0, I); shapes (N, latent)."""
    return mu.float() + torch.exp(0.5 * log_var) * eps


def gaussian_log_likelihood(x_hat, x, log_scale):
    """log p(x|z) = sum over C*H*W of log N(x; x_hat, exp(log_scale)); (..., C, H, W) -> (...)."""
    log_scale = log_scale.float().clamp(*LOG_VAR_RANGE)
    sq = (x.float() - x_hat.float()) ** 2
    return -0.5 * (sq * torch.exp(-log_scale) + log_scale + math.log(2 * math.pi)).flatten(-3).sum(-1)


def kl_divergence(mu, log_var):
    """KL(N(mu, exp(log_var)) || N(0, I)) in closed form, summed over latent dims; (N, latent) -> (N,)."""
    mu, log_var = mu.float(), log_var.float()
    return 0.5 * (mu ** 2 + torch.exp(log_var) - 1 - log_var).sum(1)


def reconstruction_loss(x_hat, x):
    """The AE family's loss (Table 1's AE and AAAE, the AAE's reconstruction phase): the mean squared error
    between the reconstruction and the original x, over pixels and images."""
    return F.mse_loss(x_hat.float(), x.float())


def elbo_loss(x_hat, x, mu, log_var, log_scale, beta):
    """Eq. 2: the batch mean of -L(x), Eq. 1, with one sample z ~ q(z|x) per image:
    -log p(x|z) + beta * KL(q(z|x) || N(0, I)). With the encoder fed x+ ~ A(x) and beta = 0, this is Eq. 3,
    AAVAE's loss, and the KL is kept out of the graph entirely (only logged); beta > 0 on top of AAVAE is
    Section 4.3's combination (Fig. 3). Returns (loss, reconstruction term, KL), each a batch mean."""
    recon = -gaussian_log_likelihood(x_hat, x, log_scale).mean()
    kl = kl_divergence(mu, log_var).mean()
    return (recon + beta * kl if beta > 0 else recon), recon, kl


def log_normal(z, mu, log_var):
    """log N(z; mu, exp(log_var)) summed over the last dimension; (..., latent) -> (...)."""
    return -0.5 * ((z - mu) ** 2 * torch.exp(-log_var) + log_var + math.log(2 * math.pi)).sum(-1)


def log_weight(x, x_hat, z, mu, log_var, log_scale):
    """log w = log p(x|z) + log p(z) - log q(z|x), p(z) = N(0, I); shapes (..., N, ...) -> (..., N)."""
    prior = -0.5 * (z ** 2 + math.log(2 * math.pi)).sum(-1)
    return gaussian_log_likelihood(x_hat, x, log_scale) + prior - log_normal(z, mu.float(), log_var)


def iwae_bound(log_w):
    """L_k = log (1/k) sum_i w_i (Burda et al. 2016): (k, N) log-weights -> (N,). L_1 is the ELBO
    (as a one-sample estimate), and E[L_k] grows with k towards log p(x)."""
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def compute_loss(x, x_hat, mu, log_var, log_scale, beta, method):
    """Returns (loss, metrics to log) of `method` for one forward."""
    if not method.variational:
        loss = reconstruction_loss(x_hat, x)
        return loss, {"recon": loss.detach()}
    loss, recon, kl = elbo_loss(x_hat, x, mu, log_var, log_scale, beta)
    return loss, {"recon": recon.detach(), "kl": kl.detach()}


def training_loss(model, x, x_aug, eps, method, beta, amp=contextlib.nullcontext):
    """One forward: the encoder sees x_aug, the decoder's target is the original x (Eq. 3 for AAVAE)."""
    with amp():
        x_hat, mu, log_var, log_scale = model(x_aug, eps)
    return compute_loss(x, x_hat, mu, log_var, log_scale, beta, method)


# ----------------------------------------------------------------------------------------------------
# The augmentation (Appendix A.1, "Augmentation pipeline": SimCLR's), x+ ~ A(x): a random resized crop and
# flip, then colour jitter, grayscale and blur, every image with its own random parameters. The crop runs
# where the images are: on the training device for images held in memory (crop_and_flip, called by the step's
# batch), in the DataLoader workers of a streamed folder (util/data.py's ViewFolder, which draws its boxes with
# sample_crop_boxes and crops in PIL). The photometric half runs on the training device. Each op is first
# defined plainly on float images in [0, 1], (N, 3, H, W), with one factor per image, equal to torchvision's
# functional op; apply_photometric_reference composes them image by image as the pipeline is written, and
# apply_photometric is the same function fused into whole-batch passes (tests/test_augment.py holds the two
# equal, and both equal to torchvision's ops).

@dataclass
class AugmentSpec:
    """The augmentation's settings, and the normalisation of the images that go into the encoder."""
    size: int  # side of the views (and of the original, the decoder's target)
    jitter: float  # strength s of ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)
    blur: bool
    mean: tuple  # per-channel normalisation of the dataset (data.STATS)
    std: tuple
    scale: tuple = (0.08, 1.0)  # RandomResizedCrop's range of areas, as fractions of the image
    ratio: tuple = (3 / 4, 4 / 3)  # and of aspect ratios

    @property
    def blur_kernel(self):  # int(0.1 * size), rounded up to odd
        k = int(0.1 * self.size)
        return k + 1 - k % 2

    def stats(self, device):
        """mean and std as (1, C, 1, 1) tensors on device, made once: a copy from the host every step
        would make the host wait for the device."""
        cache = self.__dict__.setdefault("_stats", {})
        if device not in cache:
            cache[device] = tuple(torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (self.mean, self.std))
        return cache[device]

    def crop_boxes(self, n, height, width, g):
        return sample_crop_boxes(n, height, width, self.scale, self.ratio, g)

    def crop_and_flip(self, images01, views, g):
        return crop_and_flip(images01, views, self, g)

    def __getstate__(self):  # sent to DataLoader workers without the device tensors of stats()
        return {k: v for k, v in self.__dict__.items() if k != "_stats"}


def augment_spec(args):
    """The AugmentSpec of args resolved by data.resolve_data: image size, jitter strength, blur, and the
    dataset's normalisation."""
    mean, std = data.STATS.get(args.dataset, data.STATS["imagenet"])
    return AugmentSpec(size=args.image_size, jitter=args.jitter_strength, blur=args.blur, mean=mean, std=std)


def load_data(args, device, probe=False):
    """(train Split, second Split, AugmentSpec): data.load_data's splits of resolved args, which crop their
    views with this augmentation."""
    spec = augment_spec(args)
    return (*data.load_data(args, device, spec, probe), spec)


def sample_crop_boxes(n, height, width, scale, ratio, g):
    """torchvision's RandomResizedCrop.get_params for n images at once: (n, 4) long tensor of (i, j, h, w).

    Ten attempts at an area drawn from `scale` and a log-uniform aspect ratio; the first that fits is kept,
    and an image with none falls back to the largest centred crop whose ratio lies within `ratio`.
    """
    dev = g.device
    area = height * width * torch.empty(n, 10, device=dev).uniform_(*scale, generator=g)
    log_r = torch.empty(n, 10, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g)
    w = torch.round(torch.sqrt(area * torch.exp(log_r)))
    h = torch.round(torch.sqrt(area / torch.exp(log_r)))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.float().argmax(1, keepdim=True)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    u = torch.rand(n, 2, device=dev, generator=g)
    i = torch.floor(u[:, 0] * (height - h + 1))
    j = torch.floor(u[:, 1] * (width - w + 1))
    # Fallback, as torchvision: whole image, trimmed to the nearest allowed aspect ratio, centred.
    in_ratio = width / height
    fw, fh = (width, round(width / min(ratio))) if in_ratio < min(ratio) else \
             (round(height * max(ratio)), height) if in_ratio > max(ratio) else (width, height)
    ok = fits.any(1)
    i = torch.where(ok, i, torch.full_like(i, (height - fh) // 2))
    j = torch.where(ok, j, torch.full_like(j, (width - fw) // 2))
    h = torch.where(ok, h, torch.full_like(h, fh))
    w = torch.where(ok, w, torch.full_like(w, fw))
    return torch.stack([i, j, h, w], 1).long()


def resized_crop(x, boxes, size, flip=None):
    """Crop each image to its box (i, j, h, w), resize bilinearly to size x size, and mirror where flip.

    Sampling positions are those of torchvision's resize (align_corners=False), clamped to the crop as
    torchvision's crop-then-resize clamps them, so the result equals F.resized_crop(..., antialias=False)
    followed by hflip. Crops here are never larger than the output, so antialiasing has nothing to do.
    x: (N, C, H, W) float; boxes: (N, 4); flip: (N,) bool. Returns (N, C, size, size).
    """
    n, _, height, width = x.shape
    i, j, h, w = boxes.to(x.dtype).unbind(1)
    t = (torch.arange(size, device=x.device, dtype=x.dtype) + 0.5) / size  # (size,)
    ys = torch.minimum(i[:, None] + torch.clamp(t * h[:, None] - 0.5, min=0), (i + h - 1)[:, None])
    xs = torch.minimum(j[:, None] + torch.clamp(t * w[:, None] - 0.5, min=0), (j + w - 1)[:, None])
    if flip is not None:
        xs = torch.where(flip[:, None], xs.flip(1), xs)
    # grid_sample wants coordinates in [-1, 1] with the align_corners=False convention.
    gx = (2 * xs + 1) / width - 1
    gy = (2 * ys + 1) / height - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def crop_and_flip(images01, views, spec, g):
    """The geometric half of A: `views` random resized crops of each image (N, 3, H, W), each mirrored with
    p = 0.5, every image with its own box and coin from g; returns a list of `views` (N, 3, size, size)."""
    out = []
    for _ in range(views):
        boxes = spec.crop_boxes(len(images01), images01.shape[2], images01.shape[3], g)
        flip = torch.rand(len(images01), device=g.device, generator=g) < 0.5
        out.append(resized_crop(images01, boxes, spec.size, flip))
    return out


def _blend(a, b, factor):
    # torchvision's _blend, factor * a + (1 - factor) * b clamped to the float image range, in two passes over
    # a. factor = 1 returns a exactly (b is finite): the identity of the fused jitter below.
    f = factor.view(-1, 1, 1, 1)
    return torch.addcmul((1 - f) * b, a, f).clamp_(0, 1)


def grayscale(x):
    """ITU-R 601-2 luma, as torchvision's rgb_to_grayscale, kept as (N, 1, H, W)."""
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def adjust_brightness(x, factor):
    return _blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x, factor):
    return _blend(x, grayscale(x).mean((1, 2, 3), keepdim=True), factor)


def adjust_saturation(x, factor):
    return _blend(x, grayscale(x), factor)


def adjust_hue(x, factor):
    """Rotate hue by factor (in turns, |factor| <= 0.5): RGB -> HSV, shift H modulo 1, HSV -> RGB."""
    r, g, b = x.unbind(1)
    v, _ = x.max(1)
    c = v - x.min(1)[0]  # chroma
    s = c / torch.where(c > 0, v, torch.ones_like(v))
    safe_c = torch.where(c > 0, c, torch.ones_like(c))
    # Hue in sixths of a turn; the first matching channel (r, then g, then b) decides the sector.
    h = torch.where(v == r, (g - b) / safe_c,
                    torch.where(v == g, 2 + (b - r) / safe_c, 4 + (r - g) / safe_c))
    h = torch.where(c > 0, h, torch.zeros_like(h))
    h = torch.remainder(h / 6 + factor.view(-1, 1, 1), 1.0)
    # Back to RGB with the closed form channel = v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6,
    # n = 5, 3, 1 for R, G, B.
    k = torch.remainder(torch.stack([5 + 6 * h, 3 + 6 * h, 1 + 6 * h], 1), 6)
    return (v.unsqueeze(1) * (1 - s.unsqueeze(1) * torch.clamp(torch.minimum(k, 4 - k), 0, 1))).clamp(0, 1)


def gaussian_blur(x, sigma, kernel_size):
    """Per-image Gaussian blur with reflect padding, as torchvision's gaussian_blur, done separably."""
    n, c, hgt, wid = x.shape
    half = (kernel_size - 1) / 2
    t = torch.linspace(-half, half, kernel_size, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma.view(-1, 1)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n * c, kernel_size)
    p = kernel_size // 2
    y = F.pad(x.reshape(1, n * c, hgt, wid), (p, p, p, p), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, kernel_size, 1), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, 1, kernel_size), groups=n * c)
    return y.view(n, c, hgt, wid)

JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # the jitter ops, and their columns in "factors"


def draw_photometric(n, spec, g):
    """Every random draw of the photometric half for n images, from the generator g and on its device, before
    any arithmetic (the same draws then give the same views on any device): "factors" (n, 4), one per jitter
    op; "order" (n, 4), each image's order of the ops; "jitter", "gray", "blur" (n,) whether each image is
    jittered (p = 0.8), turned gray (p = 0.2), blurred (p = 0.5); "sigma" (n,) of the blur."""
    dev, s = g.device, spec.jitter
    u = lambda lo, hi: torch.empty(n, device=dev).uniform_(lo, hi, generator=g)
    p = {}
    if s > 0:
        p["factors"] = torch.stack([u(max(0.0, 1 - 0.8 * s), 1 + 0.8 * s) for _ in range(3)] + [u(-0.2 * s, 0.2 * s)], 1)
        p["order"] = torch.rand(n, 4, device=dev, generator=g).argsort(1)  # a random permutation per image
        p["jitter"] = torch.rand(n, device=dev, generator=g) < 0.8
    p["gray"] = torch.rand(n, device=dev, generator=g) < 0.2
    if spec.blur:
        p["sigma"] = u(0.1, 2.0)
        p["blur"] = torch.rand(n, device=dev, generator=g) < 0.5
    return p


def apply_photometric_reference(x, p, spec):
    """The photometric half as it is defined, with the draws p (draw_photometric): each image on its own,
    ColorJitter's four ops one after the other in that image's order if it is jittered, then RandomGrayscale,
    then GaussianBlur, each op the plain function above. A loop over images, for reading and for the tests;
    training runs apply_photometric, the same function in whole-batch passes."""
    out = []
    for k in range(len(x)):
        v, one = x[k:k + 1], slice(k, k + 1)
        if "factors" in p and p["jitter"][k]:
            for op in p["order"][k].tolist():
                v = JITTER_OPS[op](v, p["factors"][one, op])
        if p["gray"][k]:
            v = grayscale(v).expand_as(v)
        if spec.blur and p["blur"][k]:
            v = gaussian_blur(v, p["sigma"][one], spec.blur_kernel)
        out.append(v)
    return torch.cat(out)


def apply_photometric(x, p, spec):
    """apply_photometric_reference, optimised: ColorJitter (ops in each image's order), RandomGrayscale and
    GaussianBlur with the draws p, for the whole batch at once (4.2x the speed of a pass per op at 32 px on CPU).

    Brightness, contrast and saturation are each a blend of x with a target (black, the mean gray, the
    gray image), so the jitter runs in few whole-batch passes: the blends an image makes before its hue
    shift (three passes, each making every image's next blend, or an exact identity, factor 1, for an image
    with nothing to do in it), one hue shift, then the blends after it (three more). Hue, which no factor
    leaves exactly unchanged, is switched by torch.where.
    """
    if "factors" in p:
        f, order, jitter = p["factors"], p["order"], p["jitter"]
        hue_at = (order == HUE).int().argmax(1)  # the slot of the hue shift in each image's order
        blends = order.gather(1, (order == HUE).int().argsort(dim=1, stable=True))[:, :3]  # the other three, in order
        for before_hue in (True, False):
            for j in range(3):
                op = blends[:, j]
                factor = torch.where(jitter & ((j < hue_at) == before_hue), f.gather(1, op[:, None])[:, 0], 1.0)
                gray = grayscale(x)
                target = torch.where((op == CONTRAST).view(-1, 1, 1, 1), gray.mean((1, 2, 3), keepdim=True),
                                     torch.where((op == SATURATION).view(-1, 1, 1, 1), gray, 0.0))
                x = _blend(x, target, factor)
            if before_hue:
                x = torch.where(jitter.view(-1, 1, 1, 1), adjust_hue(x, f[:, HUE]), x)
    x = torch.where(p["gray"].view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)
    if spec.blur:
        x = torch.where(p["blur"].view(-1, 1, 1, 1), gaussian_blur(x, p["sigma"], spec.blur_kernel), x)
    return x


def photometric(x, spec, g):
    """x+ from the cropped and flipped views x: SimCLR's ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) with p = 0.8 and
    the four ops in a random order per image, RandomGrayscale (p = 0.2), GaussianBlur (p = 0.5), every image
    with its own draws from g."""
    return apply_photometric(x, draw_photometric(len(x), spec, g), spec)


def normalize(x, spec):
    mean, std = spec.stats(x.device)
    return (x - mean) / std


def denormalize(x, spec):
    mean, std = spec.stats(x.device)
    return (x.float() * std + mean).clamp(0, 1)


# ----------------------------------------------------------------------------------------------------
# The training step, from the loader's batch to the optimiser: the encoder sees x+ ~ A(x), the decoder
# reconstructs x (Eq. 3)

def training_batches(batches, views, spec, start_step, seed, rank):
    """The steps' batches [x01, *views01, labels] from start_step on: this rank's share of each epoch's seeded
    order (data.TrainBatches), x01 the original images in [0, 1], then `views` crops of each. Images held in
    memory come whole and are cropped and flipped here, on the device, with step s's own generator; a streamed
    folder's DataLoader workers crop each image as they decode it (data.ViewFolder)."""
    if batches.split.images is None:
        yield from batches(start_step, ("crops", seed, rank))
        return
    for step, (x01, whole01, labels) in enumerate(batches(start_step, whole=True), start_step):
        g = generator(x01.device, "crops", seed, rank, step)
        yield [x01, *crop_and_flip(whole01, views, spec, g), labels]


def step_inputs(batch, spec, g, args, method):
    """(x, x_aug) of a batch [x01, (view01,) labels]: the decoder's target, the original image, and the encoder's
    input, x+ ~ A(x) (the view's photometric half drawn from g) for an augmented method and x otherwise; both
    normalised, channels-last."""
    x01, *view, _ = batch
    x = normalize(x01, spec)  # the decoder's target: the original image
    x_aug = normalize(photometric(view[0], spec, g), spec) if method.augmented else x  # the encoder's input, x+ ~ A(x)
    if args.target == "augmented":  # the authors' AAAE baseline: the view itself is the target
        x = x_aug
    return x.contiguous(memory_format=torch.channels_last), x_aug.contiguous(memory_format=torch.channels_last)


def optimise(optimizer, loss):
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def train_step(model, optimizer, batch, spec, g, args, amp, extra=None):
    """One optimiser step; g draws this step's randomness (the view's jitter, then the reparameterisation
    noise). Returns the loss and the metrics to log (all device tensors)."""
    method = METHODS[args.method]
    x, x_aug = step_inputs(batch, spec, g, args, method)
    eps = torch.randn((len(x), args.latent_dim), device=x.device, generator=g) if method.variational else None
    loss, parts = training_loss(model, x, x_aug, eps, method, args.beta, amp)
    optimise(optimizer, loss)
    return loss, parts


# ----------------------------------------------------------------------------------------------------
# Diagnostics on the held-out split: reconstruction, KL, importance-sampled bits per dimension (Table 1),
# the latent's signal over noise (Fig. 2), same- vs different-image latent similarity (Fig. 5), active units
# (Burda et al. 2016), and the monitor's probes.

def run_validation(raw_model, train_split, val_split, args, spec, amp, rank, world, recipe, step, steps_per_epoch):
    """evaluate and monitor (and the recipe's own diagnostics, or its own evaluation) on the held-out images: a
    log.jsonl line."""
    broadcast_buffers(raw_model)
    if recipe.evaluate:
        metrics, first = recipe.evaluate(raw_model, train_split, val_split, args, spec, amp, rank, world), None
    else:
        metrics, first = evaluate(raw_model, val_split, args, spec, amp, rank, world)
        for diagnose in (probe.monitor, recipe.monitor or (lambda *a: {})):
            metrics.update(diagnose(raw_model, train_split, val_split, args, spec, amp, rank, world))
    if is_main():
        write_log(os.path.join(args.output_dir, "log.jsonl"),
                  {"step": step, "epoch": round(step / steps_per_epoch, 4), **metrics})
        if first is not None:
            save_grid(first, spec, os.path.join(args.output_dir, f"recon_{step:07d}.png"))
        print0(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    return metrics


@torch.no_grad()
def evaluate(model, split, args, spec, amp, rank, world):
    """Returns a dict of val_* metrics, reduced over processes, and the first batch for the picture (None
    for a control, which has no decoder: its metrics are those of its latent alone)."""
    was_training = model.training
    model.eval()
    device, variational = split.device, model.variational
    n_all = len(split)
    idx = probe.held_out_subset(n_all, args)[rank::world]  # in a random order: a varied picture
    b = max(1, args.batch_size // world)
    names = ("images", "recon", "kl", "log_px", "noise", "sim_same", "sim_diff", "pairs")
    sums = {k: torch.zeros((), dtype=torch.float64, device=device) for k in names}
    mu_sum = torch.zeros(model.latent_dim, dtype=torch.float64, device=device)
    mu_sq = torch.zeros_like(mu_sum)
    first = None
    for k, (x01, v1, v2, _) in enumerate(split.batches(idx, b, 2, ("val_crops", args.seed, rank), args.workers)):
        g = generator(device, "val_noise", args.seed, k, rank)
        x = normalize(x01, spec)
        v1, v2 = normalize(photometric(v1, spec, g), spec), normalize(photometric(v2, spec, g), spec)
        n = x.shape[0]
        with amp():
            mu, log_var = model.encode(x)
        if variational:
            # IWAE estimate: log p(x) ~ logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k
            log_w = []
            for _ in range(args.val_samples):  # one decoder pass per sample: k copies of a batch may not fit
                z = reparameterize(mu, log_var, torch.randn(mu.shape, device=device, generator=g))
                with amp():
                    x_hat = model.decoder(z)
                log_w.append(log_weight(x, x_hat, z, mu, log_var, model.log_scale))
                if len(log_w) == 1:  # the one-sample reconstruction term, as in training
                    sums["recon"] += -gaussian_log_likelihood(x_hat, x, model.log_scale).sum()
            sums["kl"] += kl_divergence(mu, log_var).sum()
            sums["noise"] += log_var.exp().double().sum()  # sum over images and dimensions of sigma_d(x)^2
            sums["log_px"] += iwae_bound(torch.stack(log_w)).sum()
        elif model.decoder is not None:
            with amp():
                sums["recon"] += ((model.decoder(mu).float() - x) ** 2).flatten(1).mean(1).sum()
        sums["images"] += n
        mu_sum += mu.double().sum(0)
        mu_sq += (mu.double() ** 2).sum(0)
        with amp():
            m1 = F.normalize(model.encode(v1)[0].float(), dim=1)
            m2 = F.normalize(model.encode(v2)[0].float(), dim=1)
        cos = m1 @ m2.T
        sums["sim_same"] += cos.diagonal().sum()
        sums["sim_diff"] += cos.sum() - cos.diagonal().sum()
        sums["pairs"] += n * (n - 1)
        if first is None and model.decoder is not None:  # the picture: decoded from the view's and the original's mu
            with amp():
                first = (x[:8], v1[:8], model.decoder(model.encode(v1[:8])[0]), model.decoder(mu[:8]))
    s = dict(zip(names, all_reduce(torch.stack(list(sums.values()))).tolist()))
    all_reduce(mu_sum), all_reduce(mu_sq)
    n = s["images"]
    var = mu_sq / n - (mu_sum / n) ** 2  # Cov_x(E_q[z_d]), one value per dimension
    out = {"val_sim_same": s["sim_same"] / n, "val_sim_diff": s["sim_diff"] / max(s["pairs"], 1),
           "val_active_units": int((var > 0.01).sum().item()), "val_images": int(n)}
    if model.decoder is not None:
        out = {"val_recon": s["recon"] / n, **out}
    if variational:
        out["val_kl"] = s["kl"] / n
        # how much of z the decoder sees is signal: sum_d Var_x(mu_d) / sum_d E_x[sigma_d^2]. Without the KL
        # term (AAVAE) nothing stops sigma from shrinking, so this grows as the latent turns deterministic.
        out["val_latent_snr"] = var.sum().item() / max(s["noise"] / n, 1e-30)
        out["val_bpd"] = -s["log_px"] / n / (3 * spec.size ** 2 * math.log(2))
    model.train(was_training)
    return out, first


def save_grid(first, spec, path):
    """Rows: original, augmented view, decoded mu(view) (what training asks for: the original back),
    decoded mu(original); all de-normalised."""
    rows = [denormalize(t, spec).cpu() for t in first]
    torchvision.utils.save_image(torch.cat(rows), path, nrow=len(first[0]), padding=1)


# ----------------------------------------------------------------------------------------------------
# Schedule: a pure function of the global step.

def get_lr(step, total_steps, warmup_steps, lr, schedule):
    """Linear warm-up from lr / warmup_steps (never exactly zero), then constant, cosine or linear decay."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return lr * (0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress)


@dataclass
class Schedule:
    """The run's length in steps and its lr (Appendix A.1: Adam, linear warm-up, then constant)."""
    steps_per_epoch: int
    total_steps: int  # of --epochs: what the lr schedule follows
    last_step: int  # where this invocation stops: total_steps, or --max_steps
    warmup_steps: int
    lr: float  # --lr scaled linearly from --base_batch to the global batch (Goyal et al.)

    @classmethod
    def of(cls, args, steps_per_epoch):
        total = args.epochs * steps_per_epoch
        return cls(steps_per_epoch, total, min(total, args.max_steps or total), round(args.warmup_epochs * steps_per_epoch),
                   args.lr * args.batch_size / args.base_batch)

    def lr_at(self, step, args):
        return get_lr(step, self.total_steps, self.warmup_steps, self.lr, args.schedule)

    def epoch_end(self, done):
        """The epoch that ends with step `done`, or 0 mid-epoch."""
        return done // self.steps_per_epoch if done % self.steps_per_epoch == 0 else 0


# ----------------------------------------------------------------------------------------------------
# The run: what a method hands the loop, its model and optimiser, restored from a checkpoint. The output
# directory, the log and the checkpoints are util/rundir.py's.

@dataclass
class Recipe:
    """What train() needs of a method. paper_recipe serves Table 1's four; a method of methods/ passes its own.

    build(args, spec, device, world, train_split) -> (model, optimizer, extra): the model (the same initial
      weights on every rank), its optimiser, and `extra`, None or what else a step trains (a discriminator and
      its optimiser), with state_dict() and load_state_dict(): it is checkpointed beside the model.
    step(model, optimizer, batch, spec, g, args, amp, extra) -> (loss, metrics to log): one optimiser step.
    views: the augmented crops of each image a step's batch carries.
    flops(args, spec): FLOPs per image of one step, for the log's TFLOP/s.
    monitor(model, train_split, val_split, args, spec, amp, rank, world) -> dict: diagnostics beside evaluate's.
    evaluate: the same signature, in place of evaluate's and the monitor's, for a model that is not AutoEncoder
      (methods/iwae.py's fully-connected one on MNIST, with a Bernoulli likelihood).
    lr_at(step, sched, args) -> the step's lr, for a schedule of the method's own (the IWAE paper's stages).
    ddp: under torchrun the steps go through DistributedDataParallel; False for a step that runs several forward and
      backward passes through parts of the model (the AAE's phases), which averages its gradients itself.
    """
    build: Callable
    step: Callable
    views: int
    flops: Callable
    monitor: Optional[Callable] = None
    evaluate: Optional[Callable] = None
    lr_at: Optional[Callable] = None
    ddp: bool = True


def paper_recipe(args):
    """The recipe of --method ae, aaae, vae and aavae."""
    return Recipe(build_model, train_step, METHODS[args.method].views, step_flops)


def build_model(args, spec, device, world=1, train_split=None, method=None):
    """The autoencoder of --method (or of `method`, a methods/ module's), same initial weights on every rank, its
    Adam optimiser, and no extra state."""
    torch.manual_seed(args.seed)
    model = AutoEncoder(args.encoder, args.decoder, args.stem, args.latent_dim, spec.size,
                        (method or METHODS[args.method]).variational, args.log_scale, args.learn_scale)
    return (*with_adam(model, args, device, world), None)


def with_adam(model, args, device, world):
    """(model, optimizer): the model on the device in channels-last (the convolutions of tensor cores and of oneDNN
    alike prefer it: CPU step here +8-24 %), with SyncBatchNorm for --sync_bn under torchrun, and Adam at --lr
    (the loop sets each step's lr)."""
    model = model.to(device, memory_format=torch.channels_last)
    if args.sync_bn and world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model, torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                                   weight_decay=args.weight_decay, fused=device.type == "cuda")


def step_flops(args, spec, method=None):
    """FLOPs per image of one training step (encoder and decoder, forward and backward), counted by
    torch.utils.flop_counter on a model on the meta device: nothing is computed and no memory is taken. They
    depend on the latent's kind and the architecture, not on what the encoder sees or the loss's weights."""
    return _step_flops((method or METHODS[args.method]).variational, args.encoder, args.decoder, args.stem, args.latent_dim,
                       spec.size)


@functools.lru_cache(maxsize=None)  # the count takes ~1 s; runs in one process (tests, run_all) share it
def _step_flops(variational, encoder, decoder, stem, latent_dim, size, samples=None):
    """samples: the importance samples of an IWAE step (methods/iwae.py), each one more pass of the decoder."""
    with torch.device("meta"):
        model = AutoEncoder(encoder, decoder, stem, latent_dim, size, variational)
        x = torch.zeros(2, 3, size, size)
        eps = torch.zeros(((samples,) if samples else ()) + (2, latent_dim)) if variational else None
    with FlopCounterMode(display=False) as counter:  # matrix products and convolutions; the loss's are elementwise
        training_loss(model, x, x, eps, Method(False, variational), 1.0)[0].backward()
    return counter.get_total_flops() / 2


# ----------------------------------------------------------------------------------------------------
# The training loop

def train(args, recipe=None):
    """Pretrains with `recipe` (default: the paper's, for --method ae, aaae, vae or aavae) on args resolved by
    validate; returns the last validation's metrics."""
    recipe = recipe or paper_recipe(args)
    rank, world, device = setup_distributed()
    if args.batch_size % world:
        raise UserError(f"--batch_size {args.batch_size} (global) does not divide among {world} processes")
    train_split, val_split, spec = load_data(args, device)
    batches = data.TrainBatches(train_split, args.batch_size, rank, world, views=recipe.views, workers=args.workers)
    sched = Schedule.of(args, batches.steps_per_epoch)
    ckpt = open_output_dir(args, RESUMABLE_ARGS)  # None for a new run
    kept_precision = args.amp is None and ckpt is not None
    amp = autocast(resolve_amp(args, ckpt), device)
    raw_model, optimizer, extra = recipe.build(args, spec, device, world, train_split)
    start_step = restore(ckpt, raw_model, optimizer, extra, args)
    del ckpt
    # The steps go through DDP (under torchrun) and torch.compile (--compile); state dicts, evaluation and
    # pictures use the plain module.
    model = wrap_ddp(raw_model, device, static_graph=not args.compile) if world > 1 and recipe.ddp else raw_model
    model = torch.compile(model) if args.compile else model
    log = StepLog(args, sched, device, world, raw_model, recipe.flops(args, spec), peak_tflops(device))
    announce(args, train_split, val_split, spec, device, world, sched, log, kept_precision)
    if start_step >= sched.last_step:
        print0(f"{args.output_dir} is already at step {start_step}: nothing to do")
        return finish(args, raw_model, start_step, sched.steps_per_epoch)
    if start_step:
        print0(f"resuming from step {start_step} (epoch {start_step // sched.steps_per_epoch})")

    validate_and_log = functools.partial(run_validation, raw_model, train_split, val_split, args, spec, amp, rank, world,
                                         recipe)
    lr_at = recipe.lr_at or (lambda step, sched, args: sched.lr_at(step, args))
    stream = training_batches(batches, recipe.views, spec, start_step, args.seed, rank)
    log.start(start_step)
    model.train()
    with SavePolicy(args.save_every_minutes, device) as policy:  # SIGTERM / SIGUSR1 from here on: save, then stop
        for step in range(start_step, sched.last_step):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, sched, args)
            g = generator(device, "step", args.seed, step, rank)  # every random draw of this step
            loss, parts = recipe.step(model, optimizer, next(stream), spec, g, args, amp, extra)
            log.add(step, loss, parts, optimizer)  # on the device; a log.jsonl line every --log_every steps
            done = step + 1
            if done == sched.last_step:
                break  # the last step's checkpoint and validation follow the loop
            save, stop = policy.poll()
            epoch = sched.epoch_end(done)
            if epoch and epoch % args.val_every == 0:
                validate_and_log(done, sched.steps_per_epoch)
            if save or epoch and epoch % args.save_every == 0:
                log.check_finite()
                save_checkpoint(args, raw_model, optimizer, extra, done, sched.steps_per_epoch)
                policy.saved()
            if stop:
                log.close()
                raise Preempted(f"stopped by {policy.received or 'a signal to another rank'} after step {done} "
                                f"(epoch {done / sched.steps_per_epoch:.2f}), which "
                                f"{os.path.join(args.output_dir, 'checkpoint.pt')} holds; run the same command to "
                                "continue from there")
    log.close()
    log.check_finite()
    save_checkpoint(args, raw_model, optimizer, extra, sched.last_step, sched.steps_per_epoch)
    metrics = validate_and_log(sched.last_step, sched.steps_per_epoch)
    finish(args, raw_model, sched.last_step, sched.steps_per_epoch)
    return metrics


def run(prog, args, validate_args, make_recipe=paper_recipe):
    """A pretraining command's main: validates, then trains with the convolution algorithms --deterministic
    asks for; bad input ends as one sentence and exit status 2 (util.misc.run_cli)."""
    def go():
        validate_args(args)
        with algorithms(args.deterministic):
            return train(args, make_recipe(args))
    return run_cli(prog, go)


def main(argv=None):
    return run("aavae.py", get_args_parser().parse_args(argv), validate)

if __name__ == "__main__":
    main()
