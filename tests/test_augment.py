"""The batched augmentation is SimCLR's pipeline (Appendix A.1) with per-image parameters."""
import math

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as VF

import aavae


def images(n=6, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def per_image_reference(x, fn, factors):
    return torch.stack([fn(img, float(f)) for img, f in zip(x, factors)])


@pytest.mark.parametrize("ours, theirs, lo, hi", [
    (aavae.adjust_brightness, VF.adjust_brightness, 0.2, 1.8),
    (aavae.adjust_contrast, VF.adjust_contrast, 0.2, 1.8),
    (aavae.adjust_saturation, VF.adjust_saturation, 0.2, 1.8),
    (aavae.adjust_hue, VF.adjust_hue, -0.5, 0.5),
])
def test_each_jitter_op_equals_torchvisions_functional_op_for_the_same_factor(ours, theirs, lo, hi):
    x = images()
    x[0] = 0.5  # a grey image: hue and saturation are degenerate there
    x[1, :, :4] = x[1, 0, :4]  # grey stripes inside a colour image
    factors = torch.linspace(lo, hi, len(x))
    torch.testing.assert_close(ours(x, factors), per_image_reference(x, theirs, factors), atol=2e-5, rtol=0)


def test_grayscale_equals_torchvision():
    x = images()
    torch.testing.assert_close(aavae.grayscale(x).expand_as(x), VF.rgb_to_grayscale(x, 3), atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [32, 96])
def test_blur_equals_torchvisions_gaussian_blur_per_image_sigma(size):
    x = images(4, size)
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    k = aavae.AugmentSpec(size, 1.0, True, (0,) * 3, (1,) * 3).blur_kernel
    assert k % 2 == 1 and k == (9 if size == 96 else 3)
    ref = torch.stack([VF.gaussian_blur(img, [k, k], [float(s), float(s)]) for img, s in zip(x, sigma)])
    torch.testing.assert_close(aavae.gaussian_blur(x, sigma, k), ref, atol=1e-5, rtol=0)


def test_resized_crop_with_flip_equals_torchvisions_crop_resize_flip():
    x = images(5)
    boxes = torch.tensor([[0, 0, 32, 32], [3, 5, 10, 20], [20, 1, 12, 9], [0, 31, 1, 1], [7, 7, 17, 25]])
    flip = torch.tensor([False, True, False, True, True])
    ours = aavae.resized_crop(x, boxes, 32, flip)
    for n, (i, j, h, w) in enumerate(boxes.tolist()):
        ref = VF.resized_crop(x[n], i, j, h, w, [32, 32], antialias=False)
        ref = VF.hflip(ref) if flip[n] else ref
        torch.testing.assert_close(ours[n], ref, atol=1e-5, rtol=0, msg=f"box {n}")


def ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    grid = torch.cat([a, b]).unique()
    cdf = lambda s: torch.searchsorted(s.sort().values, grid, right=True) / len(s)
    return (cdf(a) - cdf(b)).abs().max().item()


@pytest.mark.parametrize("height, width", [(32, 32), (96, 96), (60, 200)])
def test_crop_box_distribution_matches_torchvision_random_resized_crop(height, width):
    n = 4000
    ours = aavae.sample_crop_boxes(n, height, width, (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    img = torch.zeros(1, height, width)
    theirs = torch.tensor([T.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)])
    assert ((ours[:, 0] >= 0) & (ours[:, 0] + ours[:, 2] <= height)).all()
    assert ((ours[:, 1] >= 0) & (ours[:, 1] + ours[:, 3] <= width)).all()
    crit = 1.95 * math.sqrt(2 / n)  # KS critical value at alpha = 0.001
    for name, f in {"area": lambda b: b[:, 2] * b[:, 3] / (height * width),
                    "log aspect": lambda b: torch.log(b[:, 3].double() / b[:, 2]),
                    "top": lambda b: b[:, 0].double(), "left": lambda b: b[:, 1].double()}.items():
        d = ks_statistic(f(ours).double(), f(theirs).double())
        assert d < crit, f"{name}: KS {d:.4f} >= {crit:.4f}"


def test_parameters_are_drawn_per_image_not_per_batch():
    spec = aavae.AugmentSpec(32, 0.5, True, (0,) * 3, (1,) * 3)
    one = images(1).expand(16, -1, -1, -1).contiguous()
    g = torch.Generator().manual_seed(0)
    boxes = aavae.sample_crop_boxes(16, 32, 32, spec.scale, spec.ratio, g)
    assert len({tuple(b) for b in boxes.tolist()}) > 12
    out = aavae.photometric(one, spec, g)
    distinct = {round(v, 5) for v in out.mean((1, 2, 3)).tolist()}
    assert len(distinct) > 12, "16 copies of one image should come out as (almost) 16 different views"


def test_photometric_is_a_pure_function_of_the_generator():
    spec = aavae.AugmentSpec(96, 1.0, True, (0,) * 3, (1,) * 3)
    x = images(4, 96)
    a = aavae.photometric(x, spec, torch.Generator().manual_seed(5))
    b = aavae.photometric(x, spec, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert a.min() >= 0 and a.max() <= 1


@pytest.mark.parametrize("size, jitter, blur", [(32, 0.5, False), (96, 1.0, True)])
def test_the_fused_jitter_equals_torchvisions_ops_applied_image_by_image_in_each_images_order(size, jitter, blur):
    spec = aavae.AugmentSpec(size, jitter, blur, (0,) * 3, (1,) * 3)
    x = images(24, size, seed=3)
    p = aavae.draw_photometric(24, spec, torch.Generator().manual_seed(4))
    ours = aavae.apply_photometric(x, p, spec)
    ops = [VF.adjust_brightness, VF.adjust_contrast, VF.adjust_saturation, VF.adjust_hue]
    k = spec.blur_kernel
    for n in range(len(x)):
        img = x[n]
        if p["jitter"][n]:
            for op in p["order"][n].tolist():
                img = ops[op](img, float(p["factors"][n, op]))
        if p["gray"][n]:
            img = VF.rgb_to_grayscale(img, 3)
        if blur and p["blur"][n]:
            img = VF.gaussian_blur(img, [k, k], [float(p["sigma"][n])] * 2)
        torch.testing.assert_close(ours[n], img, atol=1e-4, rtol=0, msg=f"image {n}")
    untouched = ~p["jitter"] & ~p["gray"] & (~p["blur"] if blur else True)
    assert untouched.any() and torch.equal(ours[untouched], x[untouched])  # a skipped op is an exact no-op


@pytest.mark.parametrize("size, jitter, blur", [(32, 0.5, False), (96, 1.0, True)])
def test_the_fused_photometric_half_equals_its_plain_definition(size, jitter, blur):
    # apply_photometric is the optimisation of apply_photometric_reference: the same draws, the same views
    spec = aavae.AugmentSpec(size, jitter, blur, (0,) * 3, (1,) * 3)
    x = images(24, size, seed=5)
    p = aavae.draw_photometric(24, spec, torch.Generator().manual_seed(6))
    fused, plain = aavae.apply_photometric(x, p, spec), aavae.apply_photometric_reference(x, p, spec)
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=0)
    assert p["jitter"].any() and p["gray"].any() and (p["blur"].any() if blur else True)
