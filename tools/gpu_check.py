"""The one command to run on a CUDA machine: the GPU tests and the GPU benchmark (the CPU suite there on request).

    python tools/gpu_check.py --prepare            # once, anywhere: data/gpu-check/ from data/cifar10-mini
    python tools/gpu_check.py OUT                  # on the GPU machine: the default parts (estimated 8 minutes on one H200)
    python tools/gpu_check.py OUT bench stream     # some parts only; each part prints its time
    python tools/gpu_check.py OUT --smoke          # any machine, seconds: every default part on tiny settings

A GPU machine need not reach the internet: copy data/gpu-check/ with the checkout, then run the second line
there. (data/cifar10-mini is made by `bash run_all.sh --profile small`, or data.build_cifar10_mini.) No GPU
figures have been measured yet.

--prepare writes data/gpu-check/ (git-ignored, 28 MB): cifar/, 2,000 of cifar10-mini's 32-px PNGs, and
jpeg/, 1,000 of them upscaled to 500 x 375 and saved as JPEG, decoded as costly as ImageNet's.

Parts, with their estimated seconds (PARTS): the default is the first four, in this order, 480 s together (8
minutes), and --budget seconds, 450 by default, skips a part that would start with less than half its estimate
left; files are written as each part ends, so a run cut short still returns what it did:
  tests      (150 s) tests/test_cuda.py with the GPU visible: a bf16 step of every method, finite and without a host
             synchronisation; AAVAE's loss falls; photometric ops and crops equal the CPU's; --compile trains and
             resumes; --deterministic resumes bit-identically; one-process NCCL; saved files load without a GPU
  bench      (90 s) bench.py in bf16, eager: ResNet-18 + decoder18 at 32 px, ResNet-50 + decoder50 at 32, 96, 224 px
  stream     (60 s) the streamed 224-px path: DataLoader workers (all cores) decoding the JPEGs and the step they feed,
             and torchvision.io.decode_jpeg on the GPU over the same files, for comparison
  compile    (180 s) bench.py --compile: ResNet-18 at 32 px and ResNet-50 at 224 px, compiled beside eager
  cpu_suite  (600 s) the whole CPU suite on this machine's cores, the GPU hidden (not a default part)

At most 8 files under OUT, none in folders: check.log (all that was printed), summary.json (each part's
status and seconds), env.json, cuda_tests.txt, bench.jsonl (one JSON object per benchmark, bench.py's),
cpu_suite.txt.
"""
import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
sys.path.insert(0, ROOT)
import bench  # noqa: E402 (beside this file)

DATA = os.path.join(ROOT, "data", "gpu-check")
PARTS = {"tests": 150, "bench": 90, "stream": 60, "compile": 180, "cpu_suite": 600}  # rough seconds, for --budget
DEFAULT = ["tests", "bench", "stream", "compile"]

# (encoder, image size, batch, data) of each benchmark; --smoke takes the first at batch 8
BENCH = [("resnet18", 32, 256, "cifar"), ("resnet50", 32, 256, "cifar"), ("resnet50", 96, 256, "jpeg"),
         ("resnet50", 224, 128, "jpeg")]
COMPILED = [("resnet18", 32, 256, "cifar"), ("resnet50", 224, 128, "jpeg")]


class Tee(io.TextIOBase):
    """Writes to several streams: the terminal and check.log."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
            st.flush()
        return len(s)


def prepare(source, out=DATA, count=2000, jpegs=1000):
    """data/gpu-check/{cifar,jpeg}: real files inside the checkout, to be copied with it to a GPU machine."""
    from PIL import Image
    cifar = os.path.join(out, "cifar")
    for split in ("train", "val"):
        classes = sorted(os.listdir(os.path.join(source, split)))
        per_class = (count if split == "train" else count // 10) // len(classes)
        for c in classes:
            os.makedirs(os.path.join(cifar, split, c), exist_ok=True)
            for name in sorted(os.listdir(os.path.join(source, split, c)))[:per_class]:
                with Image.open(os.path.join(source, split, c, name)) as img:
                    img.save(os.path.join(cifar, split, c, name))
    bench.make_jpeg_folder(source, os.path.join(out, "jpeg"), jpegs)
    print(f"wrote {out}: {sum(len(f) for _, _, f in os.walk(out))} files")


def bench_line(out, encoder, size, batch, source, extra=(), steps=None):
    """One bench.py run in this process; its JSON object is appended to OUT/bench.jsonl."""
    argv = ["--dataset", "folder", "--data_path", os.path.join(DATA, source), "--encoder", encoder,
            "--image_size", str(size), "--batch_size", str(batch), *extra]
    argv += (["--max_steps", str(steps)] if steps else []) + (["--warmup", "1"] if steps == 1 else [])  # --smoke's
    result = bench.main(argv)
    with open(os.path.join(out, "bench.jsonl"), "a") as f:
        f.write(json.dumps(result) + "\n")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def run_pytest(out, name, args, env, timeout):
    """pytest in a process of its own, its output in OUT/name and its last line printed; returns its status."""
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=timeout)
    with open(os.path.join(out, name), "w") as f:
        f.write(r.stdout + r.stderr)
    print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-2000:])
    return r.returncode


def part_tests(out, smoke):
    code = run_pytest(out, "cuda_tests.txt", [os.path.join(ROOT, "tests", "test_cuda.py")],
                  {**os.environ, "AAVAE_TEST_CUDA": "1", "PYTHONUNBUFFERED": "1"}, 900)
    return code in (0, 5) if smoke else code == 0  # 5: every test skipped (no GPU)


def part_bench(out, smoke):
    for encoder, size, batch, source in BENCH[:1] if smoke else BENCH:
        bench_line(out, encoder, size, 8 if smoke else batch, source, ["--workers", "0" if smoke else "8"],
                   steps=1 if smoke else None)
    return True


def part_stream(out, smoke):
    workers = 1 if smoke else os.cpu_count()
    r = bench_line(out, "resnet18" if smoke else "resnet50", 32 if smoke else 224, 8 if smoke else 128, "jpeg",
                   ["--no-in_memory", "--workers", str(workers)], steps=1 if smoke else 30)
    if torch.cuda.is_available():  # the same JPEGs decoded on the GPU, in batches, for comparison
        import torchvision
        files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(DATA, "jpeg", "train")) for f in fs][:512]
        raw = [torchvision.io.read_file(f) for f in files]
        torchvision.io.decode_jpeg(raw[:8], device="cuda")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for k in range(0, len(raw), 128):
            torchvision.io.decode_jpeg(raw[k:k + 128], device="cuda")
        torch.cuda.synchronize()
        rate = len(raw) / (time.perf_counter() - t0)
        line = {"device": r["device"], "date": r["date"], "command": "torchvision.io.decode_jpeg(device='cuda'), batches of 128",
                "image_size": "500x375", "gpu_decode_img_per_s": rate, "cpu_workers_img_per_s": r["loader_img_per_s"]}
        with open(os.path.join(out, "bench.jsonl"), "a") as f:
            f.write(json.dumps(line) + "\n")
        print(f"  GPU JPEG decode: {rate:.0f} img/s (the {workers} CPU workers: {r['loader_img_per_s']:.0f} img/s)")
    return True


def part_compile(out, smoke):
    if smoke:  # dynamo's capture only: inductor's code generation alone takes minutes on a CPU
        with _compile_backend(bench, "eager"):
            bench_line(out, "resnet18", 32, 8, "cifar", ["--compile", "--workers", "0"], steps=1)
        return True
    for encoder, size, batch, source in COMPILED:
        bench_line(out, encoder, size, batch, source, ["--compile", "--workers", "8"])
    return True


@contextlib.contextmanager
def _compile_backend(module, backend):
    real = torch.compile
    module.torch.compile = lambda m, **k: real(m, backend=backend, **k)
    try:
        yield
    finally:
        module.torch.compile = real


def part_cpu_suite(out, smoke):
    workers = "2" if smoke else str(min(16, os.cpu_count() or 1))
    return run_pytest(out, "cpu_suite.txt", ["-n", workers, "--durations=15", os.path.join(ROOT, "tests")],
                  {k: v for k, v in os.environ.items() if k != "AAVAE_TEST_CUDA"}, 1800) == 0


def environment():
    env = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
           "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_cores": os.cpu_count(),
           "machine": platform.platform()}
    with contextlib.suppress(ImportError):
        import torchvision
        env["torchvision"] = torchvision.__version__
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=torch.cuda.get_device_properties(0).total_memory / 2 ** 30,
                   cudnn=torch.backends.cudnn.version())
    return env


def get_args_parser():
    p = argparse.ArgumentParser("gpu_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", help="folder for the (at most 8) result files")
    p.add_argument("parts", nargs="*", help=f"of {', '.join(PARTS)} (default: {' '.join(DEFAULT)})")
    p.add_argument("--prepare", action="store_true", help="write data/gpu-check/ from --source, then stop")
    p.add_argument("--source", default=os.path.join(ROOT, "data", "cifar10-mini"),
                   help="with --prepare: the ImageFolder tree (train/, val/) whose images data/gpu-check/ is made of")
    p.add_argument("--smoke", action="store_true", help="every part on tiny settings, on any machine (the test suite's)")
    p.add_argument("--budget", type=float, default=450, help="seconds: a part that would start too late is skipped")
    return p


def main(argv=None):
    global DATA
    p = get_args_parser()
    args = p.parse_args(argv)
    if args.prepare:
        return prepare(args.source)
    if not args.out:
        p.error("give OUT, the folder for the result files (or --prepare)")
    parts = args.parts or DEFAULT
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose among {', '.join(PARTS)}")
    scratch = None
    if args.smoke:  # tiny data of its own, outside OUT
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from conftest import make_folder
        scratch = tempfile.mkdtemp()
        DATA = scratch
        make_folder(os.path.join(scratch, "cifar"), classes=2, train=8, val=2)
        make_folder(os.path.join(scratch, "jpeg"), classes=2, train=8, val=2)
    elif not os.path.isdir(DATA):
        p.error(f"{DATA} is missing: run python tools/gpu_check.py --prepare first, and copy data/gpu-check with the checkout")
    os.makedirs(args.out, exist_ok=True)
    t_start, summary = time.monotonic(), {"parts": {}, "env": environment()}
    with open(os.path.join(args.out, "env.json"), "w") as f:
        json.dump(summary["env"], f, indent=1)
    log = open(os.path.join(args.out, "check.log"), "a")
    try:
        with contextlib.redirect_stdout(Tee(sys.__stdout__, log)), contextlib.redirect_stderr(Tee(sys.__stderr__, log)):
            print(f"gpu_check {' '.join(parts)}{' (smoke)' if args.smoke else ''}: {json.dumps(summary['env'])}")
            for name in parts:
                left = args.budget - (time.monotonic() - t_start)
                if not args.smoke and left < PARTS[name] / 2:
                    summary["parts"][name] = {"status": "skipped", "why": f"{left:.0f} s of the budget left"}
                    print(f"== {name}: skipped, {left:.0f} s of the budget left")
                    continue
                print(f"== {name}")
                t0 = time.monotonic()
                try:
                    status = "passed" if globals()[f"part_{name}"](args.out, args.smoke) else "failed"
                except Exception as e:  # a part that breaks leaves the others to run
                    status = f"error: {type(e).__name__}: {e}"
                    import traceback
                    traceback.print_exc()
                summary["parts"][name] = {"status": status, "seconds": round(time.monotonic() - t0, 1)}
                print(f"== {name}: {status} in {time.monotonic() - t0:.0f} s")
                with open(os.path.join(args.out, "summary.json"), "w") as f:
                    json.dump(summary, f, indent=1)
    finally:
        log.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return summary


if __name__ == "__main__":
    summary = main()
    sys.exit(0 if summary is None or all(p["status"] in ("passed", "skipped") for p in summary["parts"].values()) else 1)
