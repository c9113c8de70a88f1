"""Every method's first steps, pinned: the losses and diagnostics each command logs over three steps of a tiny
run (fp32, a learning rate large enough that the steps move the model), against the values recorded in
tests/pinned_steps.json before the code was reorganised (at b90b959; the AAE's eight uses re-recorded when their
phases became separate optimiser steps, as the AAE paper runs them). A change that moves a number, in the model,
the augmentation, the data order, an objective or a diagnostic, fails here; a change of layout does not.

fp32 kernels differ in their last bits between instruction sets, and three steps and a validation carry the
difference into the second or third digit of a diagnostic, so the values are pinned per ATen CPU capability, with one
record for each kernel path seen on it: AVX512 (the same on CPUs with and without AVX512-BF16 or AMX); AVX2 as
emulated on such a CPU (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2, MKL's matrix products still AVX512's), and
AVX2 on an AMD EPYC without AVX512, whose values differ from the emulation's (up to 1.6 % in a validation
diagnostic). A run passes when it equals one record of its capability in every value; a CPU whose kernels match
none is told how to add its record (`PYTHONPATH=. python tests/test_pinned.py WHERE`, which must be run on a commit whose
values equal an existing record's on another CPU). The thread count changes how oneDNN splits its sums, so the runs
take one thread, as each of the suite's two workers does; on one CPU the numbers then repeat exactly."""
import contextlib
import io
import json
import math
import os

import pytest
import torch

import aavae
from conftest import make_folder, read_log, tiny_args, write_subset
from methods import aae, aae_uses, controls, iwae

PINNED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pinned_steps.json")
TIMING = {"img_per_s", "tflop_per_s", "mfu"}  # measured, not computed
USES = [f"{aa}{kind}_aae" for kind in ("supervised", "semi", "cluster", "dimred") for aa in ("", "aa_")]
# name -> (the command's main, its --method)
RUNS = {**{m: (aavae.main, m) for m in ("ae", "aaae", "vae", "aavae")},
        "aaae-authors": (aavae.main, "aaae"),
        **{m: (controls.main, m) for m in ("simclr", "supervised")},
        **{m: (iwae.main, m) for m in ("iwae", "aa_iwae")},
        **{m: (aae.main, m) for m in ("aae", "aa_aae")},
        **{m: (aae_uses.main, m) for m in USES}}


def pinned_log(name, folder, out, subset):
    """The run's log.jsonl rows, without the timings."""
    main, method = RUNS[name]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    extra = ["--target", "augmented"] if name == "aaae-authors" else []
    extra += ["--subset_file", subset] if "semi" in name else []
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            main(tiny_args(folder, out, "--method", method, "--max_steps", "3", "--no-amp", "--lr", "0.02",
                           "--warmup_epochs", "0", "--monitor_images", "0", *extra))
    finally:
        torch.set_num_threads(threads)
    return [{k: v for k, v in row.items() if k not in TIMING} for row in read_log(out)]


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    return write_subset(tmp_path_factory.mktemp("pinned") / "labelled.txt")


def mismatches(got, expected):
    """How many logged values differ from a record's beyond the last bits of float32; all of them if the rows' keys do."""
    if [sorted(r) for r in got] != [sorted(r) for r in expected]:
        return math.inf
    return sum(row[k] != pytest.approx(v, rel=1e-6, abs=1e-9) for row, want in zip(got, expected) for k, v in want.items())


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_first_steps_of_each_method_log_the_pinned_numbers(folder, tmp_path, subset, name):
    capability = torch.backends.cpu.get_cpu_capability()
    with open(PINNED) as f:
        records = json.load(f).get(capability)
    if not records:
        pytest.skip(f"the first steps are pinned on other CPUs, and this one computes as {capability}")
    got = pinned_log(name, folder, tmp_path, subset)
    nearest = min(records, key=lambda r: mismatches(got, r["runs"][name]))  # the record of this CPU's kernel path
    assert [sorted(r) for r in got] == [sorted(r) for r in nearest["runs"][name]]
    for row, want in zip(got, nearest["runs"][name]):
        assert row == {k: pytest.approx(v, rel=1e-6, abs=1e-9) for k, v in want.items()}, (row["step"], nearest["recorded"])


def record(where):
    """Adds this CPU's values, as one more record of its capability (see the docstring on when that is right)."""
    import tempfile
    with open(PINNED) as f:
        pinned = json.load(f)
    with tempfile.TemporaryDirectory() as tmp:
        data, labelled = make_folder(os.path.join(tmp, "data")), write_subset(os.path.join(tmp, "labelled.txt"))
        runs = {name: pinned_log(name, data, os.path.join(tmp, name), labelled) for name in sorted(RUNS)}
    pinned.setdefault(torch.backends.cpu.get_cpu_capability(), []).append({"recorded": where, "runs": runs})
    with open(PINNED, "w") as f:
        json.dump(pinned, f, separators=(",", ":"))


if __name__ == "__main__":  # from the repository's root: PYTHONPATH=. python tests/test_pinned.py WHERE
    import argparse
    parser = argparse.ArgumentParser(description=record.__doc__)
    parser.add_argument("where", help="the CPU and the commit, as the record will say")
    record(parser.parse_args().where)
