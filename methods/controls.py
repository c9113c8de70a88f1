"""Controls: the reference rows of the paper's Tables 1 and 2, SimCLR and supervised training, trained in aavae.py's
pipeline (encoder, augmentation, data, optimiser, epochs, diagnostics and probes), so that a table at a small budget
says what that budget allows. Neither is the paper's method; neither has a decoder.

    python -m methods.controls --method simclr --dataset cifar10 --data_path data --output_dir runs/cifar10-simclr
    torchrun --nproc_per_node=4 -m methods.controls --method supervised --dataset imagenet --data_path /data/imagenet

Every flag of aavae.py that is not the decoder's or the likelihood's is taken, with the same meaning; the run
directory, resume and the encoder.pth it leaves are aavae.py's, so linear_eval.py reads them alike.
"""
import functools

import torch
import torch.distributed as dist
import torch.distributed.nn as dist_nn
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import aavae
from util import data
from util.misc import UserError

# Both see augmented views; "latent" is what encode() gives the diagnostics: SimCLR's projection z, or the
# supervised encoder's pooled features h.
METHODS = {"simclr": aavae.Method(augmented=True, variational=False),  # Chen et al. 2020, NT-Xent on two views
           "supervised": aavae.Method(augmented=True, variational=False)}  # cross-entropy on the labels of x+
VIEWS = {"simclr": 2, "supervised": 1}


def get_args_parser():
    p = aavae.get_args_parser("methods/controls.py", METHODS, default="simclr")
    p.description = __doc__.split("\n\n")[0]
    g = p.add_argument_group("SimCLR")
    g.add_argument("--temperature", type=float, default=None,
                   help="simclr: temperature of the NT-Xent loss (default 0.5, SimCLR's for CIFAR-10)")
    return p


def validate(args):
    if args.target != "original" or args.decoder or args.learn_scale or args.log_scale:
        raise UserError(f"--method {args.method} is a control without a decoder: --target, --decoder, --log_scale "
                        "and --learn_scale are the autoencoders'")
    if args.method == "supervised" and args.dataset == "stl10":
        raise UserError("--method supervised needs labels, which STL-10's unlabelled pretraining split does not have")
    if args.method != "simclr" and args.temperature is not None:
        raise UserError("--temperature is for --method simclr")
    if args.temperature is not None and args.temperature <= 0:
        raise UserError(f"--temperature must be positive, got {args.temperature}")
    aavae.validate(args, METHODS[args.method])
    args.decoder = None
    if args.method == "simclr":
        args.temperature = args.temperature or 0.5
    return args


class Control(nn.Module):
    """The encoder with SimCLR's projection head (Chen et al. 2020: Linear -> BN -> ReLU -> Linear, the
    autoencoders' own ProjectionHead with z = mu) or, given `classes`, a linear classifier on h."""

    def __init__(self, encoder, stem, latent_dim, classes=None):
        super().__init__()
        h = aavae.FEATURE_DIM[encoder]
        self.encoder = aavae.build_encoder(encoder, stem)
        self.projection = aavae.ProjectionHead(h, latent_dim, variational=False) if classes is None else None
        self.classifier = nn.Linear(h, classes) if classes is not None else None
        self.decoder, self.variational = None, False
        self.latent_dim = latent_dim if classes is None else h  # what encode() returns: z, or the pooled h

    def encode(self, x):
        """x -> (z, None) for SimCLR, (h, None) for the classifier: the diagnostics' latent."""
        h = self.encoder(x)
        return (self.projection(h)[0] if self.projection is not None else h), None

    def forward(self, x):
        """SimCLR's projections z, or the classifier's logits."""
        h = self.encoder(x)
        return self.projection(h)[0] if self.projection is not None else self.classifier(h)


def nt_xent_loss(z1, z2, temperature):
    """SimCLR's NT-Xent loss (Chen et al. 2020, Eq. 1), the mean over the 2N views of the global batch of
    -log exp(cos(z_i, z_j) / t) / sum_{k != i} exp(cos(z_i, z_k) / t), j the other view of i's image.

    z1, z2: (n, d), the projections of two views of this rank's n images. Under torchrun every rank's are
    gathered with their gradients (torch.distributed.nn), so each view has all 2N - 2 others of the global
    batch as negatives; the rank's anchors are its rows of the gathered tensor, and its loss is the mean over
    them, which DDP's gradient average turns into the global batch's."""
    a, b = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    n, rank = len(a), 0
    if dist.is_initialized() and dist.get_world_size() > 1:
        rank = dist.get_rank()
        a, b = torch.cat(dist_nn.all_gather(a)), torch.cat(dist_nn.all_gather(b))
    views = torch.cat([a, b])  # (2N, d): the first views of every image, then the second views
    mine = torch.arange(rank * n, (rank + 1) * n, device=views.device)
    anchors = torch.cat([mine, mine + len(a)])
    positives = torch.cat([mine + len(a), mine])
    logits = views[anchors] @ views.T / temperature  # (2n, 2N)
    logits = logits.masked_fill(anchors[:, None] == torch.arange(len(views), device=views.device), float("-inf"))
    return F.cross_entropy(logits, positives)


def build(args, spec, device, world, train_split=None):
    """The control (same initial weights on every rank) and its Adam optimiser, as aavae.build_model's."""
    torch.manual_seed(args.seed)
    classes = data.num_classes(args) if args.method == "supervised" else None
    return (*aavae.with_adam(Control(args.encoder, args.stem, args.latent_dim, classes), args, device, world), None)


def step(model, optimizer, batch, spec, g, args, amp, extra=None):
    """One optimiser step of a control on a batch [x01, *views01, labels]: SimCLR's two augmented views of
    each image through the encoder and head in one forward, then NT-Xent; or one view x+ and cross-entropy on
    its label. The augmentation is the autoencoders' (photometric on the cropped views)."""
    _, *views, labels = batch
    x_aug = torch.cat([aavae.normalize(aavae.photometric(v, spec, g), spec) for v in views])
    x_aug = x_aug.contiguous(memory_format=torch.channels_last)
    with amp():
        out = model(x_aug).float()
    if args.method == "simclr":
        loss, parts = nt_xent_loss(*out.chunk(2), args.temperature), {}
    else:
        loss = F.cross_entropy(out, labels)
        parts = {"train_top1": 100 * (out.detach().argmax(1) == labels).float().mean()}
    aavae.optimise(optimizer, loss)
    return loss, parts


def step_flops(args, spec):
    """FLOPs per image of a step: the encoder and head on each of its views, forward and backward (NT-Xent's own
    products are left out)."""
    return _flops(VIEWS[args.method], args.encoder, args.stem, args.latent_dim, spec.size)


@functools.lru_cache(maxsize=None)
def _flops(views, encoder, stem, latent_dim, size):
    with torch.device("meta"):
        model = Control(encoder, stem, latent_dim)
        x = torch.zeros(2 * views, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / 2


def recipe(args):
    return aavae.Recipe(build, step, VIEWS[args.method], step_flops)


def main(argv=None):
    return aavae.run("methods/controls.py", get_args_parser().parse_args(argv), validate, recipe)


if __name__ == "__main__":
    main()
