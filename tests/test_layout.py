"""The repository's layout: the top level is the card (aavae.py, linear_eval.py, run_all.sh), aavae.py is the paper's
method alone and readable without the study, and the methods beyond the paper reach it, never the reverse."""
import ast
import os
import subprocess
import sys

import aavae
import linear_eval
from conftest import ROOT

EXTRAS = ("--iw_samples", "--adv_weight", "--adv_weight_y", "--disc_hidden", "--disc_lr", "--temperature",
          "--clusters", "--label_fraction", "--subset_file", "--head_margin")


def imported_modules(path):
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


MODULES = ("controls", "iwae", "aae", "aae_uses", "clustering")


def test_the_top_level_holds_the_cards_two_scripts_and_folders():
    python = sorted(f for f in os.listdir(ROOT) if f.endswith(".py"))
    assert python == ["aavae.py", "linear_eval.py"]
    assert {"util", "methods", "experiments", "tools", "tests", "docs", "results"} <= set(os.listdir(ROOT))


def test_aavae_help_lists_the_papers_flags_and_methods_only():
    text = aavae.get_args_parser().format_help()
    assert not [flag for flag in EXTRAS if flag in text]
    method = next(a for a in aavae.get_args_parser()._actions if a.dest == "method")
    assert sorted(method.choices) == ["aaae", "aavae", "ae", "vae"]
    modes = next(a for a in linear_eval.get_args_parser()._actions if a.dest == "mode")
    assert sorted(modes.choices) == ["finetune", "knn", "linear", "similarity"]


def test_aavae_and_linear_eval_import_nothing_of_the_methods_and_each_method_names_aavae_and_runs_as_a_command():
    # One new interpreter (each costs seconds; as two tests, pytest's two workers each started one): the modules of
    # methods/ and experiments/ that importing aavae loads, then the first line of `python -m methods.MODULE --help`
    # for each module (runpy is what -m uses).
    code = ("import contextlib, io, runpy, sys, aavae\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('methods', 'experiments')))\n"
            f"for name in {MODULES!r}:\n"
            "    sys.argv = [name, '--help']\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "        runpy.run_module('methods.' + name, run_name='__main__', alter_sys=True)\n"
            "    print(out.getvalue().splitlines()[0])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded, *helps = r.stdout.splitlines()
    for script in ("aavae.py", "linear_eval.py"):
        assert not {m for m in imported_modules(script) if m.split(".")[0] in ("methods", "experiments")}, script
    assert loaded == "[]"  # and importing aavae loads none of them either
    for module in MODULES:
        path = os.path.join("methods", f"{module}.py")
        assert {"aavae", "linear_eval"} & imported_modules(path), path
    # each as `python -m methods.MODULE --help` runs it
    assert [line.split()[1] for line in helps] == [f"methods/{m}.py" for m in MODULES]


def test_the_processes_that_run_tests_set_torch_up_for_them():
    # conftest.setup_torch, which pytest-xdist's controller skips (it runs no tests, and so starts without torch):
    # one thread a worker, both cores for a lone process; in-process checkpoints without their checksums
    import torch
    from torch.utils.serialization import config
    lone = int(os.environ.get("OMP_NUM_THREADS", min(2, os.cpu_count() or 1)))
    assert torch.get_num_threads() == (1 if os.environ.get("PYTEST_XDIST_WORKER") else lone)
    assert config.save.compute_crc32 is False
