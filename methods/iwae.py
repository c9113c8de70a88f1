"""The importance-weighted autoencoder (Burda et al. 2016) in aavae.py's pipeline, plain and augmentation-augmented:
another way than AAVAE's to change the VAE's latent regulariser, trained on the k-sample bound L_k instead of
the ELBO.

    python -m methods.iwae --method iwae --iw_samples 5 --dataset cifar10 --data_path data
    python -m methods.iwae --method aa_iwae --dataset folder --data_path data/cifar10-mini --encoder resnet18

aa_iwae's encoder sees x+ ~ A(x) while its decoder reconstructs the original x, as AAVAE's. The model, the
Gaussian likelihood (--log_scale, --learn_scale), the data, the loop and the diagnostics are aavae.py's.
"""
import contextlib
import functools

import torch

import aavae
from util.misc import UserError

METHODS = {"iwae": aavae.Method(augmented=False, variational=True),
           "aa_iwae": aavae.Method(augmented=True, variational=True)}


def get_args_parser():
    p = aavae.get_args_parser("methods/iwae.py", METHODS, default="iwae")
    p.description = __doc__.split("\n\n")[0]
    g = p.add_argument_group("IWAE")
    g.add_argument("--iw_samples", type=int, default=None, help="importance samples k of the bound L_k (default 5)")
    return p


def validate(args):
    if args.beta is not None:
        raise UserError("--beta has no place in the IWAE bound, which weighs the prior itself")
    if args.iw_samples is not None and args.iw_samples < 1:
        raise UserError(f"--iw_samples must be >= 1, got {args.iw_samples}")
    args.iw_samples = args.iw_samples or 5
    return aavae.validate(args, METHODS[args.method])


def iwae_loss(x_hat, x, z, mu, log_var, log_scale):
    """-L_k, the batch mean of the importance-weighted bound with k samples per image (Burda et al. 2016);
    x_hat (k, N, C, H, W), z (k, N, latent). k = 1 is the ELBO with beta = 1."""
    return -aavae.iwae_bound(aavae.log_weight(x, x_hat, z, mu, log_var, log_scale)).mean()


def training_loss(model, x, x_aug, eps, amp=contextlib.nullcontext):
    """One forward with k samples of z per image, eps (k, N, latent): the encoder sees x_aug, the decoder's target
    is x. Returns -L_k and the metrics to log: the first sample's reconstruction term and the KL."""
    with amp():
        x_hat, mu, log_var, log_scale = model(x_aug, eps)
    loss = iwae_loss(x_hat, x, aavae.reparameterize(mu, log_var, eps), mu, log_var, log_scale)
    return loss, {"recon": -aavae.gaussian_log_likelihood(x_hat[0], x, log_scale).mean().detach(),
                  "kl": aavae.kl_divergence(mu, log_var).mean().detach()}


def step(model, optimizer, batch, spec, g, args, amp, extra=None):
    """One optimiser step on -L_k, with k = --iw_samples reparameterised samples of z per image, each decoded."""
    x, x_aug = aavae.step_inputs(batch, spec, g, args, METHODS[args.method])
    eps = torch.randn((args.iw_samples, len(x), args.latent_dim), device=x.device, generator=g)
    loss, parts = training_loss(model, x, x_aug, eps, amp)
    aavae.optimise(optimizer, loss)
    return loss, parts


def recipe(args):
    """aavae.py's autoencoder with a Gaussian latent, trained on -L_k."""
    build = functools.partial(aavae.build_model, method=METHODS[args.method])
    return aavae.Recipe(build, step, METHODS[args.method].views, step_flops)


def step_flops(args, spec):
    """aavae.py's count with k decoder passes per image."""
    return aavae._step_flops(True, args.encoder, args.decoder, args.stem, args.latent_dim, spec.size, args.iw_samples)


def main(argv=None):
    return aavae.run("methods/iwae.py", get_args_parser().parse_args(argv), validate, recipe)


if __name__ == "__main__":
    main()
