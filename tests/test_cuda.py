"""The GPU path, on a CUDA device: run by gpu_check.py (AAVAE_TEST_CUDA=1 python -m pytest tests/test_cuda.py);
skipped everywhere else, since the rest of the suite hides the GPU (conftest.py)."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import aavae
from util import data
from util import misc
from conftest import COMMANDS, ROOT, SIZE, read_log, setup_run, tiny_args
from test_train import tensors_of

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (or AAVAE_TEST_CUDA unset)")
CUDA = torch.device("cuda")


@pytest.mark.parametrize("method, memory", [(m, "--in_memory") for m in sorted(COMMANDS)] + [("aavae", "--no-in_memory")])
def test_a_bf16_step_of_every_method_is_finite_and_never_waits_for_the_host(folder, tmp_path, method, memory):
    argv = tiny_args(folder, tmp_path, "--method", method, memory, *(["--label_fraction", "0.2"] if "semi" in method else []))
    args, recipe = setup_run(argv)
    aavae.resolve_amp(args)
    assert args.amp, "bf16 autocast is the default on CUDA"
    train, _, spec = aavae.load_data(args, CUDA)
    model, optimizer, adversary = recipe.build(args, spec, CUDA, 1, train)
    stream = aavae.training_batches(data.TrainBatches(train, 8, 0, 1, views=recipe.views, workers=1), recipe.views, spec,
                                    0, 0, 0)
    amp = misc.autocast(args, CUDA)
    step = recipe.step
    # a first step outside the check: the epoch's indices move to the device, Adam makes its state, cuDNN times
    step(model, optimizer, next(stream), spec, misc.generator(CUDA, "step", 0, 0, 0), args, amp, adversary)
    torch.cuda.set_sync_debug_mode("error")  # a blocking copy or a read of a device value now raises
    try:
        for k in range(1, 3):
            loss, parts = step(model, optimizer, next(stream), spec, misc.generator(CUDA, "step", 0, k, 0), args, amp,
                               adversary)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert math.isfinite(loss.item()) and all(math.isfinite(v.item()) for v in parts.values())


def test_aavae_trains_on_the_gpu_with_falling_loss_and_logs_its_mfu(folder, tmp_path):
    aavae.main(tiny_args(folder, tmp_path, "--max_steps", "24", "--log_every", "6", "--warmup_epochs", "0", "--lr", "0.03"))
    const = 0.5 * math.log(2 * math.pi) * 3 * SIZE * SIZE
    rows = [r for r in read_log(tmp_path) if "loss" in r]
    losses = [r["loss"] - const for r in rows]
    assert len(losses) == 4 and losses[-1] < 0.9 * losses[0], losses
    if misc.peak_tflops(CUDA):
        assert all(0 < r["mfu"] < 1 for r in rows)


def test_photometric_ops_on_the_gpu_equal_the_cpu_for_the_same_draws():
    spec = aavae.AugmentSpec(96, 1.0, True, (0.5,) * 3, (0.25,) * 3)
    x = torch.rand(64, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    p = aavae.draw_photometric(64, spec, torch.Generator().manual_seed(1))
    on_gpu = aavae.apply_photometric(x.to(CUDA), {k: v.to(CUDA) for k, v in p.items()}, spec)
    torch.testing.assert_close(on_gpu.cpu(), aavae.apply_photometric(x, p, spec), atol=1e-5, rtol=0)


def test_in_memory_crops_on_the_gpu_equal_the_cpu_crops_for_the_same_boxes():
    x = torch.rand(32, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(2)
    boxes = aavae.sample_crop_boxes(32, 64, 64, (0.08, 1.0), (3 / 4, 4 / 3), g)
    flip = torch.rand(32, generator=g) < 0.5
    on_gpu = aavae.resized_crop(x.to(CUDA), boxes.to(CUDA), 32, flip.to(CUDA))
    torch.testing.assert_close(on_gpu.cpu(), aavae.resized_crop(x, boxes, 32, flip), atol=1e-5, rtol=0)


def test_a_compiled_run_trains_and_resumes(folder, tmp_path, capsys):
    aavae.main(tiny_args(folder, tmp_path, "--compile", "--max_steps", "3"))
    aavae.main(tiny_args(folder, tmp_path, "--compile", "--max_steps", "5"))
    assert "resuming from step 3" in capsys.readouterr().out
    assert [r["step"] for r in read_log(tmp_path) if "loss" in r] == [1, 2, 3, 4, 5]
    assert all(math.isfinite(r["loss"]) for r in read_log(tmp_path) if "loss" in r)


def test_a_deterministic_run_resumes_bit_identically_on_the_gpu(folder, tmp_path):
    aavae.main(tiny_args(folder, tmp_path / "straight", "--deterministic", "--max_steps", "6"))
    aavae.main(tiny_args(folder, tmp_path / "resumed", "--deterministic", "--max_steps", "4"))
    aavae.main(tiny_args(folder, tmp_path / "resumed", "--deterministic", "--max_steps", "6"))
    a, b = tensors_of(tmp_path / "straight" / "checkpoint.pt"), tensors_of(tmp_path / "resumed" / "checkpoint.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_one_process_under_torchrun_trains_with_nccl_and_its_files_load_without_a_gpu(folder, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           os.path.join(ROOT, "aavae.py"), *tiny_args(folder, tmp_path, "--max_steps", "2")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "device cuda:0, 1 process(es)" in r.stdout
    load = ("import sys, torch; [torch.load(p, weights_only=True) for p in sys.argv[1:]]; "
            "assert not torch.cuda.is_available()")
    files = [str(tmp_path / f) for f in ("checkpoint.pt", "encoder.pth")]
    r = subprocess.run([sys.executable, "-c", load, *files], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr  # saved as CPU tensors: no "deserialize object on a CUDA device"
    assert json.loads((tmp_path / "args.json").read_text())["amp"] is True
