"""The adversarial autoencoder (Makhzani et al. 2016) as a latent regulariser in aavae.py's pipeline, plain and
augmentation-augmented: a discriminator on z holds the code to the prior N(0, I) instead of the KL term.

    python -m methods.aae --method aae --dataset cifar10 --data_path data
    torchrun --nproc_per_node=4 -m methods.aae --method aa_aae --dataset imagenet --data_path /data/imagenet

aa_aae's encoder sees x+ ~ A(x) while its decoder reconstructs the original x, as AAVAE's. Its other uses
(supervised, semi-supervised, clustering, a 2-D map) are methods/aae_uses.py, whose discriminators are this
module's Adversary. The model (a deterministic latent and the MSE, as Table 1's AE), data, loop and diagnostics
are aavae.py's.
"""
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

import aavae
from util.misc import UserError, wrap_ddp

METHODS = {"aae": aavae.Method(augmented=False, variational=False),
           "aa_aae": aavae.Method(augmented=True, variational=False)}


def add_adversary_args(p, adv_help="weight of the encoder's fool-the-discriminator loss (default 1)"):
    g = p.add_argument_group("the adversary (Makhzani et al. 2016)")
    g.add_argument("--adv_weight", type=float, default=None, help=adv_help)
    g.add_argument("--disc_hidden", type=int, default=None, help="width of the discriminator's two hidden layers (default 1000)")
    g.add_argument("--disc_lr", type=float, default=None, help="Adam lr of the discriminator (default: the model's lr)")
    return p


def get_args_parser():
    p = aavae.get_args_parser("methods/aae.py", METHODS, default="aae")
    p.description = __doc__.split("\n\n")[0]
    return add_adversary_args(p)


def resolve_adversary(args, adv_weight=1.0):
    """The adversary's checks and defaults, before aavae.validate (adv_weight None: a method without that weight)."""
    for name, low in (("disc_hidden", 1), ("adv_weight", 0)):
        if getattr(args, name) is not None and getattr(args, name) < low:
            raise UserError(f"--{name} must be >= {low}, got {getattr(args, name)}")
    args.adv_weight = adv_weight if args.adv_weight is None else args.adv_weight
    args.disc_hidden = args.disc_hidden or 1000
    args.disc_lr = args.disc_lr or args.lr * args.batch_size / args.base_batch  # the model's lr
    return args


def validate(args):
    return aavae.validate(resolve_adversary(args), METHODS[args.method])


class Adversary:
    """The regularisation phase of the adversarial autoencoder (Makhzani et al. 2016): an MLP
    discriminator learns to tell samples of the prior N(0, I) from codes of data, and the encoder, as the
    generator, learns to fool it; the KL term has no part in it.

    The discriminator has its own Adam. The encoder's fool-the-discriminator loss is added to the
    reconstruction loss with weight --adv_weight, and both take one step of the model's Adam: a separate
    Adam on the weighted adversarial loss alone would make the weight meaningless, since Adam's update does
    not change when its loss is multiplied by a constant."""

    def __init__(self, args, device, world, dim=None, sample_prior=None, optimizer=None):
        """dim: the code's size (default --latent_dim); sample_prior(shape, g): the prior's samples (N(0, I));
        optimizer(params): the discriminator's (default Adam at --disc_lr, betas (0.5, 0.999))."""
        h = args.disc_hidden
        self.sample_prior = sample_prior or (lambda shape, g: torch.randn(shape, device=g.device, generator=g))
        self.disc = nn.Sequential(nn.Linear(dim or args.latent_dim, h), nn.ReLU(inplace=True), nn.Linear(h, h),
                                  nn.ReLU(inplace=True), nn.Linear(h, 1)).to(device)
        self.wrapped = wrap_ddp(self.disc, device) if world > 1 else self.disc
        self.disc_opt = (optimizer or (lambda ps: torch.optim.Adam(ps, lr=args.disc_lr, betas=(0.5, 0.999))))(
            self.disc.parameters())
        self.weight = args.adv_weight

    def discriminator_step(self, z, g):
        """One Adam step of the discriminator on prior samples (label 1) and the codes z (label 0), both
        (N, latent); z is detached. Returns the discriminator's loss."""
        prior = self.sample_prior(z.shape, g)
        logits = self.wrapped(torch.cat([prior, z.float()]))
        real = (torch.arange(2 * len(z), device=logits.device) < len(z)).to(logits.dtype)[:, None]  # made on the device
        loss = F.binary_cross_entropy_with_logits(logits, real)
        self.disc_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.disc_opt.step()
        return loss.detach()

    def generator_loss(self, mu):
        """-log D(mu), the encoder's loss: small when the discriminator takes the codes for prior samples.
        The discriminator's weights enter as constants, so the gradient reaches the encoder alone."""
        weights = {k: v.detach() for k, v in self.disc.named_parameters()}
        logits = torch.func.functional_call(self.disc, weights, (mu.float(),))
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))

    def state_dict(self):
        return {"disc": self.disc.state_dict(), "disc_opt": self.disc_opt.state_dict()}

    def load_state_dict(self, state):
        self.disc.load_state_dict(state["disc"])
        self.disc_opt.load_state_dict(state["disc_opt"])


def build(args, spec, device, world, train_split=None):
    """aavae.py's deterministic autoencoder and its Adam, and the Adversary."""
    model, optimizer, _ = aavae.build_model(args, spec, device, world, method=METHODS[args.method])
    return model, optimizer, Adversary(args, device, world)


def step(model, optimizer, batch, spec, g, args, amp, adversary):
    """One step: the reconstruction's forward, the discriminator's own step on the detached codes, then the
    model's Adam step on reconstruction + --adv_weight x the encoder's fooling loss."""
    x, x_aug = aavae.step_inputs(batch, spec, g, args, METHODS[args.method])
    with amp():
        x_hat, mu, _, _ = model(x_aug)
    loss = recon = aavae.reconstruction_loss(x_hat, x)
    disc_loss = adversary.discriminator_step(mu.detach(), g)
    gen_loss = adversary.generator_loss(mu)
    loss = loss + adversary.weight * gen_loss
    aavae.optimise(optimizer, loss)
    return loss, {"recon": recon.detach(), "disc_loss": disc_loss, "gen_loss": gen_loss.detach()}


def recipe(args):
    """aavae.py's step FLOPs (the discriminator, a small MLP, is left out)."""
    flops = functools.partial(aavae.step_flops, method=METHODS[args.method])
    return aavae.Recipe(build, step, METHODS[args.method].views, flops)


def main(argv=None):
    return aavae.run("methods/aae.py", get_args_parser().parse_args(argv), validate, recipe)


if __name__ == "__main__":
    main()
