"""How fast the project's data path and training step run, next to the authors' design (torchvision
per-image transforms in DataLoader workers, plus an extra no-grad encoder pass on the original image every
step), measured in one process on the same model, batch and device. It takes aavae.py's flags:

    python bench.py --dataset folder --data_path ../shared/data/cifar10-mini --encoder resnet18 --batch_size 64

--max_steps is the number of timed steps (default 10 on a CPU, 50 on CUDA, each after 3 warm-up steps).
The last line printed is one JSON object: data_img_per_s, reference_data_img_per_s, train_img_per_s,
reference_img_per_s, device, and on CUDA the achieved TFLOP/s and the fraction of the device's peak.
"""
import json
import time

import torch
import torchvision.transforms as T
from PIL import Image

import aavae
import data
import utils


class ReferenceViews(torch.utils.data.Dataset):
    """The authors' design: each image goes through torchvision's per-image PIL transforms in a worker."""

    def __init__(self, images, spec):
        self.images = images.permute(0, 2, 3, 1).numpy()  # (N, H, W, 3) uint8, as torchvision's CIFAR10 holds it
        s = spec.jitter
        ops = [T.RandomResizedCrop(spec.size, scale=spec.scale, ratio=spec.ratio), T.RandomHorizontalFlip(),
               T.RandomApply([T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8), T.RandomGrayscale(0.2)]
        if spec.blur:
            ops.append(T.RandomApply([T.GaussianBlur(spec.blur_kernel, (0.1, 2.0))], p=0.5))
        finish = [T.ToTensor(), T.Normalize(spec.mean, spec.std)]
        self.augment, self.original = T.Compose(ops + finish), T.Compose(finish)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i])
        return self.original(img), self.augment(img)


def rate(step, n_images, steps, warmup, device):
    """Images per second of `step()` over `steps` calls after `warmup` calls (synchronised at the ends)."""
    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return n_images * steps / (time.perf_counter() - t0)


def run(args):
    _, _, device = utils.setup_distributed()
    amp = utils.autocast(args, device)
    train_split, _, spec = data.load_data(args, device)
    if train_split.images is None:
        raise utils.UserError("--benchmark needs an in-memory dataset (cifar10, stl10, or a folder that fits)")
    b = args.batch_size
    steps, warmup = (args.max_steps or (50 if device.type == "cuda" else 10)), 3
    model, optimizer, adversary = aavae.build_model(args, spec, device)
    if args.compile:
        model = torch.compile(model)
    n = len(train_split)
    cursor = iter(range(10 ** 9))

    def project_batch():
        k = next(cursor)
        idx = torch.arange(k * b, (k + 1) * b) % n
        return [*train_split.batch(idx, 1, utils.generator(device, "crops", args.seed, 0, k)), None]

    def project_data():
        x01, v01, _ = project_batch()
        g = utils.generator(device, "step", args.seed, 1, 0)
        return aavae.normalize(x01, spec), aavae.normalize(aavae.photometric(v01, spec, g), spec)

    loader = torch.utils.data.DataLoader(ReferenceViews(train_split.images.cpu(), spec), batch_size=b, shuffle=True,
                                         num_workers=args.workers, drop_last=True, persistent_workers=args.workers > 0,
                                         pin_memory=device.type == "cuda")
    ref_iter = iter(loader)

    def reference_batch():
        nonlocal ref_iter
        try:
            batch = next(ref_iter)
        except StopIteration:
            ref_iter = iter(loader)
            batch = next(ref_iter)
        return [t.to(device, non_blocking=True) for t in batch]

    def project_step():
        aavae.train_step(model, optimizer, project_batch(), spec, utils.generator(device, "step", args.seed, 2, 0), args, amp, adversary)

    def reference_step():
        x, x_aug = reference_batch()
        x, x_aug = (t.contiguous(memory_format=torch.channels_last) for t in (x, x_aug))
        with torch.no_grad(), amp():  # the authors' logging-only encoder pass on the original, in train mode
            model.encoder(x)
        eps = torch.randn(b, args.latent_dim, device=device) if model.variational else None
        loss, _ = aavae.training_loss(model, x, x_aug, eps, aavae.METHODS[args.method], args.beta, amp)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    utils.print0(f"benchmark: {args.encoder} + {args.decoder}, {spec.size}px, batch {b}, {device}, "
                 f"amp {args.amp}, {args.workers} reference workers, {steps} timed steps after {warmup}")
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
              "image_size": spec.size, "batch_size": b, "encoder": args.encoder, "decoder": args.decoder}
    result["data_img_per_s"] = rate(project_data, b, steps, warmup, device)
    result["reference_data_img_per_s"] = rate(reference_batch, b, steps, warmup, device)
    result["train_img_per_s"] = rate(project_step, b, steps, warmup, device)
    result["reference_img_per_s"] = rate(reference_step, b, steps, warmup, device)
    result["speedup"] = result["train_img_per_s"] / result["reference_img_per_s"]
    flops_per_image = aavae.step_flops(args, spec)
    result["gflop_per_image"] = flops_per_image / 1e9
    result["tflop_per_s"] = flops_per_image * result["train_img_per_s"] / 1e12
    if device.type == "cuda":
        peak = utils.peak_tflops(device)
        result["peak_fraction"] = result["tflop_per_s"] / peak if peak else None
    if args.dataset == "cifar10" or spec.size == 32:  # the paper's CIFAR-10 schedule: 45,000 images x 3,200 epochs
        result["est_hours_cifar10_3200_epochs"] = 45000 * 3200 / result["train_img_per_s"] / 3600
    for k, v in result.items():
        utils.print0(f"  {k:32s} {v:.4g}" if isinstance(v, float) else f"  {k:32s} {v}")
    utils.print0(json.dumps(result))
    return result


def main(argv=None):
    args = aavae.get_args_parser("bench.py").parse_args(argv)
    return utils.run_cli("bench.py", lambda: run(aavae.validate(args)))


if __name__ == "__main__":
    main()
