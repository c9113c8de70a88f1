"""What the README and docs/ print is what the code does: every command line of them parses and passes its
script's validation (without training), every command the experiment grids generate does too, every quoted
error message is printed by the code or asserted by the test named beside it, and every test they name exists.
Every flag of every script is named on its page, the counts and times they quote are the code's, and the paper's
AAAE figures sit beside the authors' model alone. A renamed flag or a reworded message fails here, not for a user."""
import argparse
import contextlib
import glob
import importlib
import inspect
import io
import os
import re
import shlex
from unittest import mock

import pytest

import aavae
from experiments import grid, report
import gpu_check
import linear_eval
from methods import aae, aae_uses, clustering, controls, iwae
from conftest import ROOT, make_folder, tiny_args

PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
SCRIPTS = ("aavae.py", "linear_eval.py", "bench.py", "run_all.sh", "gpu_check.py")
# the methods beyond the paper and their evaluations, run as modules (python -m methods.NAME, torchrun ... -m methods.NAME)
MODULES = {"methods.controls": controls, "methods.iwae": iwae, "methods.aae": aae, "methods.aae_uses": aae_uses,
           "methods.clustering": clustering}
EVALUATE = "methods.aae_uses evaluate"  # the AAE uses' evaluations: linear_eval.py's flags, modes head, grid and map
NLL = "methods.iwae evaluate"  # the IWAE paper's model's NLL
COMMANDS = (*SCRIPTS, *MODULES, EVALUATE, NLL)
LAUNCHERS = ("python", "python3", "bash", "torchrun", "srun")


def locate(tokens):
    """(where the command's arguments start, what it runs: a script of SCRIPTS, a module of MODULES or EVALUATE), or
    None for tokens that run none of them."""
    for i, t in enumerate(tokens):
        if os.path.basename(t) in SCRIPTS:
            return i + 1, os.path.basename(t)
        if t == "-m" and i + 1 < len(tokens) and tokens[i + 1] in MODULES:
            if tokens[i + 2:i + 3] == ["evaluate"] and tokens[i + 1] in ("methods.aae_uses", "methods.iwae"):
                return i + 3, EVALUATE if tokens[i + 1] == "methods.aae_uses" else NLL
            return i + 2, tokens[i + 1]
    return None


def evaluate_parser():
    """methods/aae_uses.py evaluate's parser: linear_eval.py's, with the uses' modes."""
    return aae_uses.get_evaluate_parser()


def code_spans(line):
    """The parts of a markdown line that are code: an indented line whole, else its `...` spans."""
    return [line.strip()] if line.startswith("    ") else re.findall(r"`([^`]+)`", line)


BAD_INPUT = os.path.join(ROOT, "docs", "bad-input.md")  # its commands fail on purpose: see the error test


def documented_commands():
    """(page:line, script, argv) for every command of SCRIPTS the pages print, continuation lines joined;
    '...' and the brackets of [optional] flags are dropped, and a command ends at a pipe or a redirection."""
    found = []
    for page in (p for p in PAGES if p != BAD_INPUT):
        lines = open(page).read().replace("\\\n", " ").splitlines()
        for n, line in enumerate(lines, 1):
            for span in code_spans(line):
                try:
                    tokens = shlex.split(span, comments=True)
                except ValueError:
                    continue
                found_ = locate(tokens)
                if found_ is None or not any(t in LAUNCHERS for t in tokens[:found_[0]]):
                    continue
                at, script = found_
                argv = []
                for t in tokens[at:]:
                    if t in ("|", "&", "&&", ";", ">", "2>&1"):
                        break
                    t = t.strip("[]")
                    if t and t != "...":
                        argv.append(t)
                found.append((f"{os.path.relpath(page, ROOT)}:{n}", script, argv))
                # the script where the page says it is (tools/ for the occasional ones), run from the repository
                file = tokens[at - 1] if script in SCRIPTS else script.split()[0].replace(".", "/") + ".py"
                assert os.path.isfile(os.path.join(ROOT, file)), f"{found[-1][0]}: no {file}"
    return found


def with_data(argv, trees):
    """argv with the data of a folder or ImageNet run replaced by generated trees (a documented path such as
    /data/imagenet is not here), and SimCLR's label lists by empty files."""
    argv = list(argv)
    value = lambda flag: argv[argv.index(flag) + 1] if flag in argv else None
    if value("--dataset") in ("folder", "imagenet") or value("--profile") in ("quick", "small", "split"):
        if "--data_path" not in argv:
            argv += ["--data_path", ""]
        argv[argv.index("--data_path") + 1] = trees["folder"]
    for flag in ("--places_path", "--subset_dir"):
        if flag in argv:
            argv[argv.index(flag) + 1] = trees[flag]
    return argv


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    subsets = root / "subsets"
    subsets.mkdir()
    for name in ("1percent.txt", "10percent.txt"):
        (subsets / name).write_text("000.png\n")
    return {"folder": make_folder(root / "folder", classes=2, train=2501, val=2, size=8),  # --finetune_choice holds 5,000 out
            "--places_path": make_folder(root / "places", classes=2, train=1, val=1, size=8), "--subset_dir": str(subsets)}


def validate(script, argv, trees):
    """Parses argv as `script` would and runs its validation, training nothing; returns the commands of a
    run_all.sh grid, for those to be validated too."""
    argv = with_data(argv, trees)
    if script in ("aavae.py", "bench.py"):
        aavae.resolve_amp(aavae.validate(aavae.get_args_parser(script).parse_args(argv)))
    elif script in ("methods.controls", "methods.iwae", "methods.aae", "methods.aae_uses"):
        aavae.resolve_amp(MODULES[script].validate(MODULES[script].get_args_parser().parse_args(argv)))
    elif script == "linear_eval.py":
        linear_eval.validate(linear_eval.get_args_parser().parse_args(argv))
    elif script == "methods.clustering":
        linear_eval.validate(clustering.get_args_parser().parse_args(argv))
    elif script == EVALUATE:
        linear_eval.validate(evaluate_parser().parse_args(argv))
    elif script == NLL:
        iwae.get_evaluate_parser().parse_args(argv)
    elif script == "gpu_check.py":
        args = gpu_check.get_args_parser().parse_args(argv)
        assert set(args.parts) <= set(gpu_check.PARTS), args.parts
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            g = grid.main(argv + ["--dry_run"])
        return [st.cmd for st in g.steps]
    return []


def test_every_documented_command_parses_and_passes_validation(trees, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the grids' relative output directories, never written in a dry run
    commands = documented_commands()
    scripts = {s for _, s, _ in commands}
    assert scripts == set(COMMANDS) and len(commands) > 30, (scripts, len(commands))
    for where, script, argv in commands:
        err, cmd = io.StringIO(), [script, *argv]
        try:
            with contextlib.redirect_stderr(err):
                for cmd in validate(script, argv, trees):  # and a grid's own commands
                    at, what = locate(cmd)
                    validate(what, cmd[at:], trees)
        except (SystemExit, Exception) as e:
            pytest.fail(f"{where}: {shlex.join(cmd)}: {type(e).__name__} {e} {err.getvalue().strip()}")


def test_the_paper_quick_and_small_grids_are_among_the_validated(trees, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    profiles = {argv[argv.index("--profile") + 1] for _, s, argv in documented_commands() if s == "run_all.sh"}
    assert {"paper", "quick", "small"} <= profiles


def bad_input_rows():
    """(example, quoted parts) of each row of docs/bad-input.md's table."""
    rows = []
    for line in open(BAD_INPUT).read().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`"):
            rows.append((cells[1].strip("`"), re.findall(r"`([^`]+)`", cells[2])))
    return rows


def test_every_quoted_error_is_what_the_code_prints_or_what_its_test_asserts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    make_folder(tmp_path / "tiny")  # 24 training images
    rows = bad_input_rows()
    assert len(rows) >= 25
    for example, quoted in rows:
        assert quoted, example
        if example.startswith("tests/"):  # the named test asserts each quoted part
            source = source_of(example)
            missing = [q for q in quoted if q not in source]
            assert not missing, f"{example} asserts none of {missing}"
            continue
        tokens = shlex.split(example)
        at, script = locate(tokens)
        main = {"aavae.py": aavae.main, "linear_eval.py": linear_eval.main, EVALUATE: aae_uses.evaluate_main,
                **{m: module.main for m, module in MODULES.items()}}[script]
        with pytest.raises(SystemExit) as e:
            main(tokens[at:])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1, (example, err)
        at = 0
        for q in quoted:  # the quoted parts, in order
            at = err.find(q, at)
            assert at >= 0, f"{example}: '{q}' is not in: {err}"


def source_of(name):
    """The source of a test named path::function (parametrised or not)."""
    path, function = name.split("::")
    module = __import__(os.path.splitext(os.path.basename(path))[0])
    assert os.path.exists(os.path.join(ROOT, path)), name
    return inspect.getsource(getattr(module, function))


def test_every_test_the_pages_name_exists():
    named = {m for page in PAGES for m in re.findall(r"(tests/\w+\.py::\w+)", open(page).read())}
    assert len(named) > 10
    for name in sorted(named):
        source_of(name)  # raises if the file or the function is not there


def test_a_renamed_flag_would_fail_the_suite(trees, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    where, script, argv = next(c for c in documented_commands() if c[1] == "aavae.py" and "--output_dir" in c[2])
    renamed = ["--out_dir" if a == "--output_dir" else a for a in argv]
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        validate(script, renamed, trees)


def test_the_readme_links_every_page():
    readme = open(os.path.join(ROOT, "README.md")).read()
    for page in PAGES[1:]:
        assert f"docs/{os.path.basename(page)}" in readme, page


def test_the_documented_probes_of_a_run_and_of_the_random_baseline_run_one_after_the_other(tmp_path, monkeypatch):
    # docs/evaluation.md's first two commands, as printed (no --output_dir), on generated images and for one epoch:
    # the second must not find the first's result.json in its place.
    monkeypatch.chdir(tmp_path)
    probes = [argv for where, script, argv in documented_commands()
              if where.startswith("docs/evaluation.md") and script == "linear_eval.py"][:2]
    assert "--checkpoint" in probes[0] and "--random_init" in probes[1], probes
    readme = [argv for where, script, argv in documented_commands()
              if where.startswith("README") and script == "linear_eval.py"]
    assert readme == probes[:1]
    data = make_folder(tmp_path / "data", classes=2, train=8, val=2)
    checkpoint = probes[0][probes[0].index("--checkpoint") + 1]
    with contextlib.redirect_stdout(io.StringIO()):  # the run the command names, one step long
        aavae.main(tiny_args(data, os.path.dirname(checkpoint), "--max_steps", "1"))
    cheap = ["--dataset", "folder", "--data_path", data, "--epochs", "1", "--batch_size", "8", "--workers", "0"]
    for argv in probes:
        small = ["--encoder", "resnet18"] if "--random_init" in argv else []  # a third of ResNet-50's time
        with contextlib.redirect_stdout(io.StringIO()):
            linear_eval.main(argv + cheap + small)  # argparse: the later flags win
    made = sorted(os.path.relpath(p, tmp_path) for p in glob.glob(str(tmp_path / "runs" / "eval-*" / "result.json")))
    assert len(made) == 2 and "-cifar10-aavae-" in made[0] + made[1] and "-random-resnet18-" in made[0] + made[1], made


def test_no_two_documented_probes_share_an_output_directory(trees, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = {}
    parsers = {"linear_eval.py": linear_eval.get_args_parser, "methods.clustering": clustering.get_args_parser,
               EVALUATE: evaluate_parser}
    for where, script, argv in documented_commands():
        if script not in parsers:
            continue
        out = linear_eval.validate(parsers[script]().parse_args(with_data(argv, trees))).output_dir
        assert seen.setdefault(out, (where, argv))[1] == argv, f"{where} and {seen[out][0]} both write {out}"


class Parsed(Exception):
    """Carries the parser a script's main() built, stopped at parse_args."""


def parser_of(main):
    def stop(self, *a, **k):
        raise Parsed(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", stop):
        try:
            main([])
        except Parsed as e:
            return e.args[0]
    raise AssertionError(f"{main} parsed no arguments")


def own_flags(parser, base):
    """parser's options that base does not have (with --method, which the page must explain too)."""
    known = {a.dest for a in base._actions} - {"method"}
    return argparse.Namespace(_actions=[a for a in parser._actions if a.dest not in known])


# each command's parser, and the page that must name every one of its flags (a module's own, where it adds them to
# aavae.py's or linear_eval.py's)
PARSERS = [("aavae.py", lambda: aavae.get_args_parser(), "training.md"),
           ("bench.py", lambda: aavae.get_args_parser("bench.py"), "training.md"),  # bench.py takes aavae.py's flags
           ("methods.controls", lambda: own_flags(controls.get_args_parser(), aavae.get_args_parser()), "training.md"),
           ("methods.iwae", lambda: own_flags(iwae.get_args_parser(), aavae.get_args_parser()), "training.md"),
           ("methods.aae", lambda: own_flags(aae.get_args_parser(), aavae.get_args_parser()), "training.md"),
           ("methods.aae_uses", lambda: own_flags(aae_uses.get_args_parser(), aavae.get_args_parser()), "aae-uses.md"),
           ("linear_eval.py", linear_eval.get_args_parser, "evaluation.md"),
           ("methods.clustering", lambda: own_flags(clustering.get_args_parser(), linear_eval.get_args_parser()), "evaluation.md"),
           (EVALUATE, evaluate_parser, "evaluation.md"),  # linear_eval.py's flags, the uses' modes
           ("run_all.sh", lambda: parser_of(grid.main), "experiments.md"),
           (NLL, iwae.get_evaluate_parser, "iwae-aae-mnist.md"),
           ("gpu_check.py", gpu_check.get_args_parser, "testing.md")]


@pytest.mark.parametrize("script, parser, page", PARSERS, ids=[p[0] for p in PARSERS])
def test_every_flag_of_every_script_is_documented(script, parser, page):
    text = open(os.path.join(ROOT, "docs", page)).read()
    flags = [a.option_strings[0] for a in parser()._actions
             if a.option_strings and a.help != argparse.SUPPRESS and a.option_strings[0] != "-h"]
    assert len(flags) >= 2, flags
    missing = [f for f in flags if not re.search(re.escape(f) + r"(?![\w-])", text)]
    assert not missing, f"docs/{page} does not name {script}'s {', '.join(missing)}"


def table_rows(text):
    """The cells of every markdown table row of a text."""
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")]


def test_the_papers_aaae_figures_sit_beside_the_authors_model_alone():
    # The paper's AAAE row is the authors' model, which reconstructs the augmented view (--target augmented).
    pages = PAGES + sorted(glob.glob(os.path.join(ROOT, "results", "*", "README.md")))
    figures = {report.fmt(v) for v in grid.PAPER_TABLE1["aaae"].values() if v > 10}  # 50.62, 41.94
    found = 0
    for page in pages:
        for cells in table_rows(open(page).read()):
            if any(c.split(" ")[0] in figures for c in cells[1:]):
                found += 1
                assert "augmented" in cells[0] or "authors" in cells[0], f"{os.path.relpath(page, ROOT)}: {cells}"
    assert found >= 2  # the README's table and results/small-cpu's


def test_the_dry_run_counts_the_pages_quote_are_the_grids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    count = {}
    for profile in ("paper", "quick"):
        with contextlib.redirect_stdout(io.StringIO()):
            g = grid.main(["--profile", profile, "--data_path", "d", "--dry_run"])
        count[profile] = (len(g.steps), sum(st.kind == "pretrain" for st in g.steps))
    readme, page = (open(os.path.join(ROOT, p)).read() for p in ("README.md", "docs/experiments.md"))
    for text in (readme, page):
        quoted = re.findall(r"the (\d+) commands", text)
        assert quoted and {int(n) for n in quoted} == {count["paper"][0]}, quoted
    quick = re.search(r"(\d+) commands, (\d+) of them pretraining runs", page)
    assert quick and (int(quick.group(1)), int(quick.group(2))) == count["quick"]
    with contextlib.redirect_stdout(io.StringIO()):
        g = grid.main(["--profile", "split", "--data_path", "d", "--dry_run"])
    assert sum(st.kind == "pretrain" for st in g.steps) == 9
    assert f"the split's {len(g.steps)} commands (nine" in " ".join(page.split())


def test_the_gpu_checks_time_is_one_figure_from_its_parts_estimates():
    seconds = sum(gpu_check.PARTS[p] for p in gpu_check.DEFAULT)
    testing = " ".join(open(os.path.join(ROOT, "docs", "testing.md")).read().split())  # lines joined
    texts = [" ".join(open(p).read().split()) for p in PAGES] + [" ".join(gpu_check.__doc__.split())]
    quoted = {int(m) for t in texts for m in re.findall(r"estimated (\d+) minutes", t)}
    assert quoted == {round(seconds / 60)}, quoted
    assert f"{seconds} s" in testing and f"{seconds} s" in gpu_check.__doc__
    for part in gpu_check.PARTS:  # each part's estimate, once, in the page's list and in the script's
        assert f"`{part}` ({gpu_check.PARTS[part]} s" in testing, part
        assert re.search(rf"^  {part} +\({gpu_check.PARTS[part]} s\)", gpu_check.__doc__, re.M), part


def test_the_paper_map_covers_the_paper_and_names_only_functions_and_flags_that_exist():
    page = open(os.path.join(ROOT, "docs", "paper-map.md")).read()
    for item in ["Eq. 1", "Eq. 2", "Eq. 3", "Table 1", "Table 2", "Table 3", "Fig. 1", "Fig. 2", "Fig. 3", "Fig. 4a",
                 "Fig. 4b", "Fig. 4c", "Fig. 4d", "Fig. 5", "Architecture", "Datasets", "Augmentation pipeline",
                 "Optimisation", "Linear probe", "Semi-supervised", "Transfer", "Pretraining duration", "Compute"]:
        assert re.search(rf"^\| {re.escape(item)}", page, re.M), item  # a row of its own
    refs = re.findall(r"`([\w/]+)\.py:([\w.]+)`", page)  # aavae.py:train_step, methods/controls.py:nt_xent_loss
    assert len(refs) > 40
    for module, name in refs:
        obj = importlib.import_module(module.replace("/", "."))
        for part in name.split("."):
            assert hasattr(obj, part), f"docs/paper-map.md names {module}.py:{name}, which does not exist"
            obj = getattr(obj, part)
    parsers = [m.get_args_parser() for m in MODULES.values()] + [linear_eval.get_args_parser(), parser_of(grid.main)]
    known = {s for parser in parsers for a in parser._actions for s in a.option_strings}
    flags = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", page))
    assert len(flags) > 30 and not flags - known, sorted(flags - known)
    for folder in re.findall(r"\]\(\.\./(results/[\w-]+)/README\.md\)", page):
        assert os.path.isfile(os.path.join(ROOT, folder, "results.json")) or os.path.isdir(os.path.join(ROOT, folder)), folder
