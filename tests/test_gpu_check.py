"""gpu_check.py, the one command for a GPU machine: its smoke mode runs every default part here, in seconds,
so that the full check cannot rot on machines without a GPU."""
import json
import os

import gpu_check


def test_the_gpu_check_runs_every_default_part_and_writes_its_files(tmp_path):
    out = tmp_path / "out"
    summary = gpu_check.main([str(out), "--smoke"])
    assert list(summary["parts"]) == gpu_check.DEFAULT
    assert all(p["status"] == "passed" for p in summary["parts"].values()), summary["parts"]
    assert {"check.log", "summary.json", "env.json", "cuda_tests.txt", "bench.jsonl"} <= set(os.listdir(out))
    lines = [json.loads(line) for line in (out / "bench.jsonl").read_text().splitlines()]
    keys = {"device", "date", "command", "model", "image_size", "train_img_per_s", "data_img_per_s", "loader_img_per_s",
            "augment_img_per_s", "tflop_per_s", "mfu"}
    assert len(lines) == 3 and all(keys <= set(r) for r in lines)
    assert [r["data_path"] for r in lines] == ["memory", "stream", "memory"]
    assert lines[1]["loader_img_per_s_per_worker"] > 0 and lines[2]["compiled_img_per_s"] > 0
    log = (out / "check.log").read_text()
    assert "== compile: passed" in log and log.count("1 timed steps after 1") == 3  # --smoke: one warm-up step
