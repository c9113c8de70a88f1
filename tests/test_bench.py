"""bench.py measures what training runs: the same step under the same algorithm settings."""
import pytest
import torch

import aavae
import bench
from conftest import tiny_args


class Enough(Exception):
    """Raised from the first training step: the settings it ran under are all this test needs."""


def test_the_benchmarked_step_runs_under_the_algorithm_settings_of_training(folder, tmp_path, monkeypatch):
    seen = []

    def record(*a, **k):
        seen.append((torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled()))
        raise Enough

    monkeypatch.setattr(aavae, "train_step", record)
    for extra in ([], ["--deterministic"]):
        with pytest.raises(Enough):
            aavae.main(tiny_args(folder, tmp_path / f"run{len(extra)}", "--max_steps", "1", *extra))
        with pytest.raises(Enough):
            bench.main(["--dataset", "folder", "--data_path", folder, "--encoder", "resnet18", "--batch_size", "8",
                        "--workers", "0", "--max_steps", "1", *extra])
    # (cudnn.benchmark, deterministic algorithms): training's, then bench's; by default, then --deterministic
    assert seen == [(True, False), (True, False), (False, True), (False, True)]
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark  # restored after


def test_warmup_below_one_is_refused_in_one_sentence(folder, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--dataset", "folder", "--data_path", folder, "--encoder", "resnet18", "--warmup", "0"])
    assert e.value.code == 2 and "--warmup must be at least 1" in capsys.readouterr().err
