"""The importance-weighted autoencoder (Burda et al. 2016): another way than AAVAE's to change the VAE's latent
regulariser, trained on the k-sample bound L_k instead of the ELBO. Two settings:

- aavae.py's pipeline (--arch resnet, the default): its ResNet autoencoder and Gaussian likelihood on CIFAR-10 or a
  folder, plain (iwae) and augmentation-augmented (aa_iwae: the encoder sees x+ ~ A(x), the decoder reconstructs x).
- the IWAE paper's own (--arch mlp --dataset mnist): Table 1's one-stochastic-layer model (methods/mlp.py) on
  dynamically binarised MNIST with a Bernoulli likelihood, the paper's Adam and its schedule of stages
  (--schedule stages), and its VAE rows (--method vae: the ELBO averaged over k samples).

    python -m methods.iwae --method iwae --iw_samples 5 --dataset cifar10 --data_path data
    python -m methods.iwae --method iwae --iw_samples 50 --arch mlp --dataset mnist --data_path data/mnist \\
        --batch_size 20 --base_batch 20 --lr 1e-3 --schedule stages --warmup_epochs 0 --epochs 40
    python -m methods.iwae evaluate --checkpoint runs/mnist-iwae/checkpoint.pt --samples 5000

The loop, checkpoints, resume and torchrun are aavae.py's.
"""
import contextlib
import functools
import math
import os
import sys

import torch

import aavae
from methods import mlp
from util import data
from util.misc import (Parser, UserError, all_reduce, block, generator, is_main, load_checkpoint, print0, provenance,
                       run_cli, save_atomic_json, setup_distributed)
from util.rundir import check_eval_dir

METHODS = {"iwae": aavae.Method(augmented=False, variational=True),
           "aa_iwae": aavae.Method(augmented=True, variational=True),
           "vae": aavae.Method(augmented=False, variational=True)}  # the IWAE paper's VAE rows: L_1 averaged over k samples
# Burda et al.'s Adam (beta1 0.9, beta2 0.999, epsilon 1e-4, on the loss summed over a batch of 20, as their code sums
# it) and schedule: stage i = 0, 1, ... lasts 3^i passes over the training set at lr 1e-3 x 10^(-i / 7); eight
# stages, 3,280 passes, in the paper. Their code's Adam differs in details this one does not copy (beta1 0.99, the
# second moment starting at one, the lr rounded to two figures): docs/iwae-aae-mnist.md lists them.
ADAM_EPS = 1e-4


def get_args_parser():
    p = aavae.get_args_parser("methods/iwae.py", METHODS, default="iwae")
    p.description = __doc__.split("\n\n")[0]
    g = p.add_argument_group("IWAE")
    g.add_argument("--iw_samples", type=int, default=None,
                   help="samples k per image: of the bound L_k (iwae), or averaged in the ELBO (vae); default 5")
    g.add_argument("--arch", default="resnet", choices=["resnet", "mlp"],
                   help="resnet: aavae.py's autoencoder (--encoder, --decoder); mlp: the IWAE paper's 784-200-200-50 tanh "
                        "model with a Bernoulli likelihood on dynamically binarised images (--dataset mnist)")
    for action in p._actions:  # MNIST for the paper's model; its schedule of stages
        if action.dest == "dataset":
            action.choices = [*action.choices, "mnist"]
        if action.dest == "schedule":
            action.choices = [*action.choices, "stages"]
            action.help += "; stages (methods/iwae.py): the IWAE paper's, lr x 10^(-i/7) for 3^i epochs, i = 0, 1, ..."
        if action.dest == "latent_dim":
            action.default, action.help = None, "size of z (default 128, or 50 with --arch mlp)"
    return p


def validate(args):
    if args.beta is not None:
        raise UserError("--beta has no place in the IWAE bound, which weighs the prior itself")
    if args.iw_samples is not None and args.iw_samples < 1:
        raise UserError(f"--iw_samples must be >= 1, got {args.iw_samples}")
    if args.method == "vae" and args.arch != "mlp":
        raise UserError("--method vae here is the IWAE paper's VAE row (--arch mlp); aavae.py trains the ResNet VAE")
    if (args.arch == "mlp") != (args.dataset == "mnist"):
        raise UserError("--arch mlp takes MNIST's 28 x 28 one-channel images (--dataset mnist), and aavae.py's ResNet "
                        "takes three channels: choose --arch mlp with --dataset mnist, --arch resnet otherwise")
    if args.arch == "mlp" and METHODS[args.method].augmented:
        raise UserError(f"--method {args.method} augments its encoder's input in colour, which MNIST has not: "
                        "--arch mlp trains iwae or vae")
    if args.schedule == "stages" and args.warmup_epochs:
        raise UserError("--schedule stages has no warm-up: give --warmup_epochs 0")
    args.iw_samples = args.iw_samples or 5
    args.latent_dim = args.latent_dim or (50 if args.arch == "mlp" else 128)
    if args.arch == "mlp":
        args.monitor_images = 0  # the monitor's probes read a ResNet's pooled features
        args.amp = False if args.amp is None else args.amp  # fp32: the bound is reported to a hundredth of a nat
    return aavae.validate(args, METHODS[args.method])


# ----------------------------------------------------------------------------------------------------
# aavae.py's ResNet autoencoder, Gaussian likelihood

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


# ----------------------------------------------------------------------------------------------------
# The IWAE paper's model: MNIST, Bernoulli likelihood, a schedule of stages

def objective(log_w, method):
    """The loss of (k, N) log-weights: -L_k (iwae) or minus the ELBO averaged over the k samples (vae), batch means."""
    return -(log_w.mean(0) if method == "vae" else aavae.iwae_bound(log_w)).mean()


def mlp_step(model, optimizer, batch, spec, g, args, amp, extra=None):
    """One Adam step of the paper's model: each image binarised afresh (g), k samples of z, the method's objective."""
    x = mlp.binarize(batch[0], g)
    eps = torch.randn((args.iw_samples, len(x), args.latent_dim), device=x.device, generator=g)
    with amp():
        logits, z, mu, log_var = model(x, eps)
    log_w = mlp.log_weight(x, logits, z, mu.float(), log_var.float())
    loss = objective(log_w, args.method)
    aavae.optimise(optimizer, loss * len(x))  # summed over the batch, as the authors' code: Adam's epsilon of 1e-4 is theirs
    return loss, {"recon": -mlp.bernoulli_log_likelihood(logits[0].detach(), x).mean(),
                  "kl": aavae.kl_divergence(mu.detach(), log_var.detach()).mean()}


def stage_lr(step, sched, args):
    """--schedule stages: the lr of the stage that `step` falls in (stage i spans epochs (3^i - 1) / 2 to (3^(i+1) - 1) / 2)."""
    if args.schedule != "stages":
        return sched.lr_at(step, args)
    return sched.lr * 10 ** (-stage_of(step // sched.steps_per_epoch) / 7)


def stage_of(epoch):
    """The stage i whose 3^i epochs hold `epoch` (counted from 0): stage i ends after (3^(i+1) - 1) / 2 epochs."""
    i = 0
    while (3 ** (i + 1) - 1) // 2 <= epoch:
        i += 1
    return i


def binarized_val(split):
    """The held-out images binarised once, by one fixed draw for every run (seed 0), so that all rows are scored on
    the same binary images."""
    cache = split.__dict__.setdefault("_binary", {})
    if "x" not in cache:
        x01 = split.images.float() / 255
        cache["x"] = mlp.binarize(x01.cpu(), generator("cpu", "binarize_val", 0)).to(split.device)
    return cache["x"]


@torch.no_grad()
def bound_and_units(model, x, samples, batch, rank, world, chunk=1000):
    """Over binary images x (N, 1, 28, 28): the sums of L_k (k = samples), of the one-sample reconstruction term and
    of the KL, the per-dimension sums of E_q[z] and its square (for active units), over this rank's block of x,
    reduced over processes. The k samples of an image are drawn `chunk` at a time and combined by logsumexp."""
    start, stop = block(len(x), rank, world)
    sums = torch.zeros(4, dtype=torch.float64, device=x.device)
    mu_sum = torch.zeros(model.latent_dim, dtype=torch.float64, device=x.device)
    mu_sq = torch.zeros_like(mu_sum)
    for k in range(start, stop, batch):
        xb = x[k:min(k + batch, stop)]
        g = generator(x.device, "nll", k)
        mu, log_var = model.encode(xb)
        parts = []
        for c in range(0, samples, chunk):
            eps = torch.randn((min(chunk, samples - c), len(xb), model.latent_dim), device=x.device, generator=g)
            z = mu + torch.exp(0.5 * log_var) * eps
            logits = model.decoder(z)
            parts.append(torch.logsumexp(mlp.log_weight(xb, logits, z, mu, log_var).double(), 0))
            if c == 0:
                sums[1] += -mlp.bernoulli_log_likelihood(logits[0], xb).double().sum()
        sums[0] += (torch.logsumexp(torch.stack(parts), 0) - math.log(samples)).sum()
        sums[2] += aavae.kl_divergence(mu, log_var).double().sum()
        sums[3] += len(xb)
        mu_sum += mu.double().sum(0)
        mu_sq += (mu.double() ** 2).sum(0)
    return all_reduce(sums), all_reduce(mu_sum), all_reduce(mu_sq)


def mlp_evaluate(model, train_split, val_split, args, spec, amp, rank, world):
    """The paper's diagnostics on --val_size binarised held-out images: -L_k with k = --val_samples (an estimate of
    the NLL from above, in nats), the one-sample reconstruction term, the KL, and the active units (Burda et al.:
    Cov_x(E_q[z_d]) above 0.01)."""
    was = model.training
    model.eval()
    x = binarized_val(val_split)
    x = x[:args.val_size] if args.val_size else x
    (bound, recon, kl, n), mu_sum, mu_sq = bound_and_units(model, x, args.val_samples, 100, rank, world)
    model.train(was)
    var = mu_sq / n - (mu_sum / n) ** 2
    return {"val_nll": -bound.item() / n.item(), "val_recon": recon.item() / n.item(), "val_kl": kl.item() / n.item(),
            "val_active_units": int((var > 0.01).sum().item()), "val_images": int(n.item())}


def build_mlp(args, spec, device, world=1, train_split=None):
    """The paper's model, its output bias at the training images' mean, and Adam (epsilon 1e-4)."""
    torch.manual_seed(args.seed)
    mean = train_split.images.float().mean(0) / 255 if train_split is not None else None
    model = mlp.BernoulliVAE(latent_dim=args.latent_dim, mean_image=mean).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=args.lr, eps=ADAM_EPS), None


@functools.lru_cache(maxsize=None)
def mlp_flops(latent_dim, samples):
    """FLOPs per image of one step of the paper's model: the encoder once, the decoder k times, forward and backward."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        model = mlp.BernoulliVAE(latent_dim=latent_dim)
        x, eps = torch.zeros(2, 1, 28, 28), torch.zeros(samples, 2, latent_dim)
    with FlopCounterMode(display=False) as counter:
        logits, z, mu, log_var = model(x, eps)
        mlp.log_weight(x, logits, z, mu, log_var).sum().backward()
    return counter.get_total_flops() / 2


def recipe(args):
    """aavae.py's autoencoder with a Gaussian latent, trained on -L_k; or, --arch mlp, the IWAE paper's model."""
    if args.arch == "mlp":
        return aavae.Recipe(build_mlp, mlp_step, 0, lambda a, s: mlp_flops(a.latent_dim, a.iw_samples),
                            evaluate=mlp_evaluate, lr_at=stage_lr)
    build = functools.partial(aavae.build_model, method=METHODS[args.method])
    return aavae.Recipe(build, step, METHODS[args.method].views, step_flops)


def step_flops(args, spec):
    """aavae.py's count with k decoder passes per image."""
    return aavae._step_flops(True, args.encoder, args.decoder, args.stem, args.latent_dim, spec.size, args.iw_samples)


# ----------------------------------------------------------------------------------------------------
# python -m methods.iwae evaluate: the paper's test log-likelihood, -L_5000, and active units, on all of val

def get_evaluate_parser():
    p = Parser("methods/iwae.py evaluate", description="The NLL estimate -L_k (Burda et al.: k = 5,000) and the active "
               "units of a run of --arch mlp, on all of its held-out images, binarised once (seed 0) for every run.")
    p.add_argument("--checkpoint", required=True, help="a run's checkpoint.pt")
    p.add_argument("--samples", type=int, default=5000, help="importance samples k per image")
    p.add_argument("--batch_size", type=int, default=10, help="images at a time (each with its k samples)")
    p.add_argument("--data_path", default=None, help="MNIST's folder (default: the run's)")
    p.add_argument("--output_dir", default=None, help="default: evals/ beside the run, nll-RUN")
    p.add_argument("--overwrite", action="store_true", help="replace a result.json already in output_dir")
    return p


def evaluate_main(argv=None):
    args = get_evaluate_parser().parse_args(argv)
    return run_cli("methods/iwae.py evaluate", lambda: evaluate(args))


def evaluate(args):
    if args.samples < 1 or args.batch_size < 1:
        raise UserError("--samples and --batch_size must be positive")
    ckpt = load_checkpoint(args.checkpoint)
    run = ckpt.get("args", {})
    if run.get("arch") != "mlp":
        raise UserError(f"{args.checkpoint} is not a run of methods/iwae.py --arch mlp (the NLL needs its Bernoulli model)")
    run_dir = os.path.dirname(os.path.abspath(args.checkpoint))
    args.output_dir = args.output_dir or os.path.join(os.path.dirname(run_dir), "evals", f"nll-{os.path.basename(run_dir)}")
    result_path = check_eval_dir(args)
    rank, world, device = setup_distributed()
    model = mlp.BernoulliVAE(latent_dim=run["latent_dim"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise UserError(f"{args.checkpoint} does not fit the paper's model ({str(e).splitlines()[0][:200]})") from None
    model.to(device).eval()
    root = args.data_path or run["data_path"]
    val = data.Split(*data.read_mnist(root, "val"), None, device, 0)
    steps_per_pass = len(data.read_mnist(root, "train")[1]) // run["batch_size"]
    x = binarized_val(val)
    (bound, recon, kl, n), mu_sum, mu_sq = bound_and_units(model, x, args.samples, args.batch_size, rank, world)
    var = mu_sq / n - (mu_sum / n) ** 2
    result = {"nll": -bound.item() / n.item(), "recon": recon.item() / n.item(), "kl": kl.item() / n.item(),
              "active_units": int((var > 0.01).sum().item()), "latent_dim": run["latent_dim"],
              "unit_variances": var.tolist(), "eval_samples": args.samples, "images": int(n.item()),
              "method": run["method"], "train_samples": run["iw_samples"], "step": ckpt["step"],
              "passes": ckpt["step"] / steps_per_pass,
              "checkpoint": args.checkpoint, "provenance": provenance()}
    if is_main():
        os.makedirs(args.output_dir, exist_ok=True)
        save_atomic_json(result, result_path)
        print0(f"{run['method']} k={run['iw_samples']}, {result['passes']:.0f} passes: NLL {result['nll']:.2f} nats "
               f"(k = {args.samples}, {result['images']} images), {result['active_units']} active units of {run['latent_dim']}")
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["evaluate"]:
        return evaluate_main(argv[1:])
    return aavae.run("methods/iwae.py", get_args_parser().parse_args(argv), validate, recipe)


if __name__ == "__main__":
    main()
