"""The fully-connected models of the IWAE and AAE papers on MNIST (28 x 28, one channel), with a Bernoulli
likelihood: what methods/iwae.py trains with --arch mlp, beside aavae.py's ResNet autoencoders.

Burda et al. (2016), Table 1's one stochastic layer: 784 - 200 - 200 - 50 with tanh, q(z|x) a diagonal Gaussian
whose mean and log-variance are linear in the last hidden layer, p(x|z) the mirror image, 50 - 200 - 200 - 784, each
pixel a Bernoulli whose logit is the last layer's output.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import aavae

PIXELS = 28 * 28
LOG_VAR_RANGE = (-20.0, 10.0)  # wide: a posterior standard deviation of e^-10 is allowed, exp() never overflows


def mlp(sizes, act):
    """Linear layers of `sizes` with act between them (none after the last), Glorot-uniform weights and zero biases."""
    layers = []
    for k, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        nn.init.xavier_uniform_(layers[-1].weight), nn.init.zeros_(layers[-1].bias)
        if k < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class BernoulliVAE(nn.Module):
    """x (N, 1, 28, 28) in {0, 1} -> q(z|x) = N(mu, exp(log_var)) -> logits of p(x|z) (..., 784).
    Attributes as aavae.AutoEncoder's where the loop reads them: encoder, variational, latent_dim, log_scale (None:
    the likelihood has no scale)."""

    def __init__(self, hidden=(200, 200), latent_dim=50, act=nn.Tanh, mean_image=None):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), mlp([PIXELS, *hidden], act), act())
        self.mu, self.log_var = mlp([hidden[-1], latent_dim], act), mlp([hidden[-1], latent_dim], act)
        self.decoder = mlp([latent_dim, *reversed(hidden), PIXELS], act)
        if mean_image is not None:  # as the IWAE authors' code: the output starts at the training set's mean image
            with torch.no_grad():
                self.decoder[-1].bias.copy_(torch.logit(mean_image.flatten().float().clamp(0.001, 0.999)))
        self.variational, self.latent_dim, self.log_scale = True, latent_dim, None

    def encode(self, x):
        h = self.encoder(x)
        return self.mu(h), self.log_var(h).clamp(*LOG_VAR_RANGE)

    def forward(self, x, eps):
        """eps (k, N, latent) standard normal: returns the logits (k, N, 784), z (k, N, latent), mu and log_var."""
        mu, log_var = self.encode(x)
        z = mu + torch.exp(0.5 * log_var) * eps
        return self.decoder(z), z, mu, log_var


def bernoulli_log_likelihood(logits, x):
    """log p(x|z) = sum over pixels of x log sigmoid(l) + (1 - x) log(1 - sigmoid(l)); logits (..., N, 784), x (N, 1,
    28, 28) -> (..., N)."""
    x = x.flatten(1).float()
    return -F.binary_cross_entropy_with_logits(logits.float(), x.expand_as(logits), reduction="none").sum(-1)


def log_weight(x, logits, z, mu, log_var):
    """log w = log p(x|z) + log N(z; 0, I) - log q(z|x); shapes (k, N, ...) -> (k, N)."""
    log_prior = -0.5 * (z ** 2 + math.log(2 * math.pi)).sum(-1)
    return bernoulli_log_likelihood(logits, x) + log_prior - aavae.log_normal(z, mu, log_var)


def binarize(x01, g):
    """A draw of binary images: each pixel 1 with its grey level as the probability (dynamic binarisation)."""
    return torch.bernoulli(x01, generator=g)
