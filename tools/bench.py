"""How fast the project's data path and training step run, measured in one process on the same model, batch
and device. It takes aavae.py's flags:

    # in memory: the batched augmentation and the step, beside the authors' design (torchvision per-image
    # transforms in DataLoader workers, plus an extra no-grad encoder pass on the original every step)
    python tools/bench.py --dataset folder --data_path data/cifar10-mini --encoder resnet18 --batch_size 64
    # --compile: the compiled step beside the eager one
    python tools/bench.py --dataset folder --data_path data/cifar10-mini --encoder resnet18 --batch_size 64 --compile
    # streamed: DataLoader workers decoding JPEGs (a folder made by make_jpeg_folder), and the step they feed
    python tools/bench.py --dataset folder --data_path data/jpeg --no-in_memory --image_size 224 --encoder resnet18 --batch_size 32

--max_steps is the number of timed steps (default 10 on a CPU, 50 on CUDA), each measurement after --warmup steps
(default 3).
The last line printed is one JSON object (see run); gpu_check.py collects them as JSON lines.
"""
import datetime
import json
import os
import shlex
import sys
import time

import torch
import torchvision.transforms as T
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
import aavae  # noqa: E402
from util import data  # noqa: E402
from util import misc  # noqa: E402


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


def make_jpeg_folder(source, out, count, size=(500, 375), quality=90):
    """An ImageFolder tree out/train/CLASS/*.jpg of `count` images of source/train (the first of each class in
    turn), upscaled to `size` (ImageNet's typical 500 x 375) and saved as JPEG: a streamed-path benchmark with
    decoding as costly as ImageNet's, made from images on disk. out/val holds a copy of the first 1 %."""
    classes = sorted(c for c in os.listdir(os.path.join(source, "train")) if not c.startswith("."))
    files = {c: sorted(os.listdir(os.path.join(source, "train", c))) for c in classes}
    picked = [(c, files[c][k]) for k in range(max(map(len, files.values()))) for c in classes if k < len(files[c])][:count]
    for n, (c, name) in enumerate(picked):
        for split in ("train",) + (("val",) if n < max(len(classes), count // 100) else ()):
            os.makedirs(os.path.join(out, split, c), exist_ok=True)
            with Image.open(os.path.join(source, "train", c, name)) as img:
                img.convert("RGB").resize(size, Image.BICUBIC).save(
                    os.path.join(out, split, c, os.path.splitext(name)[0] + ".jpg"), quality=quality)
    return out


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


def run(args, argv=None):
    """Times the data path and the training step; returns (and prints as its last line) one JSON object:
    device, date, command, model, image_size, batch_size, amp, data_path ("memory" or "stream"), workers,
    loader_img_per_s (the batches of original and cropped view: in memory the crops on the device, streamed
    the DataLoader workers, with loader_img_per_s_per_worker), augment_img_per_s (the batched photometric
    augmentation alone), data_img_per_s (both: what the step consumes), train_img_per_s (the full step),
    gflop_per_image, tflop_per_s, mfu (on an accelerator of known peak); in memory also the reference design's
    reference_data_img_per_s, reference_img_per_s and the speedup; with --compile, the compiled step's
    compiled_img_per_s, compiled_tflop_per_s and compiled_mfu, and compile_seconds (its first steps' time
    beyond the steady rate)."""
    _, _, device = misc.setup_distributed()
    aavae.resolve_amp(args)
    amp = misc.autocast(args, device)
    train_split, _, spec = aavae.load_data(args, device)
    memory = train_split.images is not None
    b = args.batch_size
    steps, warmup = (args.max_steps or (50 if device.type == "cuda" else 10)), args.warmup
    model, optimizer, adversary = aavae.build_model(args, spec, device)
    peak, flops = misc.peak_tflops(device), aavae.step_flops(args, spec)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": shlex.join(["python", "bench.py", *(sys.argv[1:] if argv is None else argv)]),
              "model": f"{args.encoder}+{args.decoder}", "image_size": spec.size, "batch_size": b, "amp": args.amp,
              "data_path": "memory" if memory else "stream", "workers": 0 if memory else args.workers}
    misc.print0(f"benchmark: {result['model']}, {spec.size}px, batch {b}, {device}, amp {args.amp}, {result['data_path']} "
                 f"data path, {args.workers} workers, {steps} timed steps after {warmup}")

    # ---- the data path: what one training step consumes
    batches = data.TrainBatches(train_split, b, 0, 1, views=1, workers=args.workers)
    stream = batches(0, ("crops", args.seed, 0))
    g = misc.generator(device, "step", args.seed, 1, 0)
    views = next(stream)[1]
    result["loader_img_per_s"] = rate(lambda: next(stream), b, steps, warmup, device)
    if not memory:
        result["loader_img_per_s_per_worker"] = result["loader_img_per_s"] / max(1, args.workers)
    result["augment_img_per_s"] = rate(lambda: aavae.photometric(views, spec, g), b, steps, warmup, device)

    def project_data():
        x01, v01, _ = next(stream)
        return aavae.normalize(x01, spec), aavae.normalize(aavae.photometric(v01, spec, g), spec)

    result["data_img_per_s"] = rate(project_data, b, steps, warmup, device)

    # ---- the training step, eager and (with --compile) compiled
    def timed_step(m):
        return lambda: aavae.train_step(m, optimizer, next(stream), spec, g, args, amp, adversary)

    result["train_img_per_s"] = rate(timed_step(model), b, steps, warmup, device)
    result["gflop_per_image"] = flops / 1e9
    result["tflop_per_s"] = flops * result["train_img_per_s"] / 1e12
    result["mfu"] = result["tflop_per_s"] / peak if peak else None
    if args.compile:
        compiled = torch.compile(model)
        t0 = time.perf_counter()
        result["compiled_img_per_s"] = rate(timed_step(compiled), b, steps, warmup, device)
        result["compile_seconds"] = time.perf_counter() - t0 - (steps + warmup) * b / result["compiled_img_per_s"]
        result["compiled_tflop_per_s"] = flops * result["compiled_img_per_s"] / 1e12
        result["compiled_mfu"] = result["compiled_tflop_per_s"] / peak if peak else None

    # ---- the authors' design on the same images and model (in memory only: it reads them from there)
    if memory:
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

        def reference_step():
            x, x_aug = (t.contiguous(memory_format=torch.channels_last) for t in reference_batch())
            with torch.no_grad(), amp():  # the authors' logging-only encoder pass on the original, in train mode
                model.encoder(x)
            eps = torch.randn(b, args.latent_dim, device=device) if model.variational else None
            loss, _ = aavae.training_loss(model, x, x_aug, eps, aavae.METHODS[args.method], args.beta, amp)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        result["reference_data_img_per_s"] = rate(reference_batch, b, steps, warmup, device)
        result["reference_img_per_s"] = rate(reference_step, b, steps, warmup, device)
        result["speedup"] = result["train_img_per_s"] / result["reference_img_per_s"]
    if spec.size == 32:  # the paper's CIFAR-10 schedule: 45,000 images x 3,200 epochs
        result["est_hours_cifar10_3200_epochs"] = 45000 * 3200 / max(result["train_img_per_s"], result.get("compiled_img_per_s", 0)) / 3600
    for k, v in result.items():
        misc.print0(f"  {k:32s} {v:.4g}" if isinstance(v, float) else f"  {k:32s} {v}")
    misc.print0(json.dumps(result))
    return result


def main(argv=None):
    p = aavae.get_args_parser("bench.py")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each measurement")
    args = p.parse_args(argv)

    def measure():
        if args.warmup < 1:
            raise misc.UserError(f"--warmup must be at least 1 (the first step is not timed), got {args.warmup}")
        aavae.validate(args)
        with misc.algorithms(args.deterministic):  # as aavae.main trains: else another set-up is timed
            return run(args, argv)

    return misc.run_cli("bench.py", measure)


if __name__ == "__main__":
    main()
