"""docs/cluster.md's SLURM job script on a real SLURM: a one-node cluster of the test's own (munged, slurmctld and
slurmd started here as plain processes, stopped by their process ids), the script as the page prints it with only
the resources substituted, a notice and a real time limit, the requeue, and the resume. launch.py's exit status
and its handling of an early notice are tested without SLURM too."""
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import launch
from util import misc
from conftest import ROOT, read_log, tiny_args
from test_cluster import assert_same_checkpoints
from test_distributed import free_port


def job_script():
    """The job script of docs/cluster.md's SLURM section, as printed."""
    text = open(os.path.join(ROOT, "docs", "cluster.md")).read()
    text = text[text.index("\n## SLURM\n"):]
    block = re.search(r"\n    #!/bin/bash\n(?:    .*\n)+", text).group(0)
    return "".join(line[4:] + "\n" for line in block.strip("\n").split("\n"))


def runnable(script, argv, tasks=1, limit=None):
    """The script for this machine: no GPUs, one CPU and one worker a task, `tasks` tasks (launchers) on the one
    node, a tiny run instead of ImageNet's, and with `limit` a time limit of that many minutes and a notice 50 s
    before it (slurmctld looks every 30 s: the notice comes 10 to 40 s after the start, a notice before the first
    step waiting in launch.py for the workers). Each substituted text must be there once, so that the test follows
    the page."""
    run = re.search(r"aavae\.py .*?--save_every_minutes 30\n", script, re.S).group(0)
    subs = [("--gpus-per-node=4 ", ""), ("--cpus-per-task=32", "--cpus-per-task=1"),
            ("--nproc_per_node=4", "--nproc_per_node=1"), ("--ntasks-per-node=1", f"--ntasks-per-node={tasks}"),
            (run, f"aavae.py {shlex.join(argv)} --save_every_minutes 30\n")]
    if limit:
        subs += [("--time=24:00:00", f"--time={limit}"), ("--signal=USR1@300", "--signal=USR1@50")]
    for old, new in subs:
        assert script.count(old) == 1, f"docs/cluster.md's job script no longer has {old!r}"
        script = script.replace(old, new)
    return script


class Slurm:
    """A one-node SLURM in a directory: its configuration, its daemons (ours to stop), and its commands."""

    def __init__(self, root):
        self.root, self.daemons = root, []
        for d in ("state", "spool", "log"):
            (root / d).mkdir(parents=True)
        key = root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        host = socket.gethostname().split(".")[0]  # the name slurmd finds for itself
        self.conf = root / "slurm.conf"
        self.conf.write_text(f"""ClusterName=aavae
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN
# the test's jobs (four CPUs' worth) run at once on the two cores of CI's machine
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
""")
        # the venv's python first, as in the user's activated environment; one thread a process, as in the
        # uninterrupted run the test compares with
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                    "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
        self.start("munged", "-F", "--force", f"--socket={root}/munge.socket", f"--key-file={key}",
                   f"--pid-file={root}/munged.pid", f"--seed-file={root}/munged.seed",
                   f"--log-file={root}/log/munged.log")
        wait_for(lambda: (root / "munge.socket").exists(), 10, "munged's socket", self)
        self.start("slurmctld", "-D", "-i")
        self.start("slurmd", "-D")
        wait_for(lambda: self.run("sinfo", "-h", "-o", "%T").strip() == "idle", 30, "an idle node", self)

    def start(self, *cmd):
        log = open(self.root / "log" / f"{cmd[0]}.out", "w")
        self.daemons.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env))

    def run(self, *cmd):
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=30, check=True).stdout

    def submit(self, script, out):
        path = out.with_suffix(".sh")
        path.write_text(script)
        return self.run("sbatch", "--parsable", "-o", str(out), str(path)).strip()

    def job(self, jid):
        """scontrol's fields of a job: JobState, Restarts, ExitCode, Reason, ..."""
        return dict(re.findall(r"(\w+)=(\S*)", self.run("scontrol", "show", "job", "-o", jid)))

    def start_now(self, jid):
        """Starts a requeued job now instead of after SLURM's two-minute hold, but not within the second of its
        requeue: slurmd refuses a credential made in the second it revoked the job's last ("Job credential
        revoked"), and the job would fail."""
        time.sleep(2)
        self.run("scontrol", "update", f"JobId={jid}", "StartTime=now")

    def wait_state(self, jid, state, seconds, out):
        """Waits for a job to reach `state`, failing at once if it ends in another."""
        ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")
        wait_for(lambda: self.job(jid)["JobState"] == state or self.job(jid)["JobState"] in ended, seconds,
                 f"job {jid} {state}", self, out)
        assert self.job(jid)["JobState"] == state, (self.job(jid), out.read_text(), self.logs())

    def logs(self):
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((self.root / "log").iterdir()))

    def stop(self):
        """Cancels what is left of the jobs, waits for their processes, then ends the daemons, newest first."""
        try:
            self.run("scancel", "--user", "root")
            wait_for(lambda: not self.run("squeue", "-h").strip(), 60, "the jobs to end", self)
        finally:
            for p in reversed(self.daemons):
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def wait_for(ready, seconds, what, slurm=None, out=None):
    end = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > end:
            detail = (out.read_text() if out is not None and out.exists() else "") + (slurm.logs() if slurm else "")
            raise AssertionError(f"no {what} after {seconds} s\n{detail}")
        time.sleep(0.2)


@pytest.fixture
def slurm(tmp_path):
    missing = [c for c in ("slurmctld", "slurmd", "munged", "sbatch") if shutil.which(c) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian: apt-get install slurm-wlm)")
    if os.geteuid() != 0:
        pytest.skip("the test's SLURM runs its daemons as root (SlurmUser=root)")
    cluster = Slurm(tmp_path / "slurm")
    yield cluster
    cluster.stop()


def stopped_steps(out):
    """The step each worker said it stopped after, in the order of the output."""
    return [int(s) for s in re.findall(r"aavae\.py: stopped by (?:SIGUSR1|a signal to another rank) after step (\d+)",
                                       out)]


def loss_steps(run):
    return [r["step"] for r in read_log(run) if "loss" in r]


def test_the_documented_job_script_saves_at_the_notice_requeues_and_resumes_bit_identically(slurm, folder, tmp_path):
    script = job_script()
    steps = 18  # six epochs: enough that the notice at step 3 comes long before the end
    notice, limit, bad = (tmp_path / name for name in ("notice", "limit", "bad"))
    # 1. one task, the notice as slurmctld sends it before a time limit: SIGUSR1 to every process of the steps
    # 2. two tasks on the one node, two launchers at one rendezvous as on two nodes, and a real time limit; its run
    #    is long (no epoch checkpoints or validations to slow it) and is cancelled once its second run has resumed
    # 3. bad input: the data directory does not exist
    jobs = {"notice": slurm.submit(runnable(script, tiny_args(folder, notice, "--max_steps", str(steps))),
                                   notice.with_suffix(".out")),
            "limit": slurm.submit(runnable(script, tiny_args(folder, limit, "--save_every", "1000", "--val_every",
                                                             "1000"), tasks=2, limit=1), limit.with_suffix(".out")),
            "bad": slurm.submit(runnable(script, tiny_args(str(tmp_path / "absent"), bad, "--max_steps", "3")),
                                bad.with_suffix(".out"))}
    with open(tmp_path / "straight.out", "w") as log:  # the uninterrupted run, meanwhile
        straight = subprocess.Popen([sys.executable, "aavae.py", *tiny_args(folder, tmp_path / "straight",
                                                                            "--max_steps", str(steps))],
                                    cwd=ROOT, env=slurm.env, stdout=log, stderr=subprocess.STDOUT)
    saved = lambda run: torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    requeued = lambda name: lambda: (lambda job: (job["JobState"], job["Restarts"]) == ("PENDING", "1"))(
        slurm.job(jobs[name]))
    text = lambda path: path.with_suffix(".out").read_text() if path.with_suffix(".out").exists() else ""

    wait_for(lambda: (notice / "log.jsonl").exists() and max(loss_steps(notice), default=0) >= 3, 120,
             "step 3 of the first job", slurm, notice.with_suffix(".out"))
    signalled = max(loss_steps(notice))
    slurm.run("scancel", "--signal=USR1", jobs["notice"])
    wait_for(requeued("notice"), 60, "requeue of the first job", slurm, notice.with_suffix(".out"))
    notice_saved = saved(notice)
    slurm.start_now(jobs["notice"])

    wait_for(requeued("limit"), 120, "requeue of the job at its time limit", slurm, limit.with_suffix(".out"))
    first, limit_saved = text(limit), saved(limit)
    slurm.start_now(jobs["limit"])

    slurm.wait_state(jobs["notice"], "COMPLETED", 120, notice.with_suffix(".out"))
    wait_for(lambda: "resuming from step" in text(limit), 120, "the resumed run of the timed job", slurm,
             limit.with_suffix(".out"))
    slurm.run("scancel", jobs["limit"])
    slurm.wait_state(jobs["bad"], "FAILED", 60, bad.with_suffix(".out"))
    assert straight.wait(120) == 0, (tmp_path / "straight.out").read_text()

    # The notice: saved at the step it stopped after, requeued with status 3 from the worker, launch.py and srun,
    # resumed from that step, finished as the uninterrupted run did, every step logged once.
    out = text(notice)
    stopped = stopped_steps(out)
    assert len(stopped) == 1 and signalled <= stopped[0] == notice_saved < steps, (signalled, stopped, out)
    order = ["failed (exitcode: 3)", "launch.py: the workers saved their checkpoint at a scheduler's notice",
             "srun exited with status 3", f"resuming from step {stopped[0]}", f"done at step {steps}",
             "srun exited with status 0"]
    at = [out.find(line) for line in order]
    assert -1 not in at and at == sorted(at), (order, at, out)
    job = slurm.job(jobs["notice"])
    assert (job["JobState"], job["Restarts"], job["ExitCode"]) == ("COMPLETED", "1", "0:0")
    assert_same_checkpoints(tmp_path / "straight", notice)
    assert loss_steps(notice) == list(range(1, steps + 1))

    # The time limit: slurmctld's own notice before it, both launchers' status 3, the checkpoint of that step,
    # a requeue, and the second run resuming from it.
    stopped = stopped_steps(first)
    assert len(stopped) == 2 and stopped[0] == stopped[1] == limit_saved >= 1, first
    assert "aavae.py: stopped by SIGUSR1" in first and "DUE TO TIME LIMIT" not in first, first
    assert first.count("launch.py: the workers saved their checkpoint") == 2 and "srun exited with status 3" in first
    assert f"resuming from step {stopped[0]}" in text(limit)[len(first):]
    logged = loss_steps(limit)
    assert logged == list(range(1, len(logged) + 1)) and len(logged) >= stopped[0]

    # Bad input: status 2 all the way up, the job FAILED and not requeued.
    out = text(bad)
    assert "aavae.py: error:" in out and "launch.py: worker rank 0 failed first, with exit status 2" in out, out
    assert "srun exited with status 2" in out
    job = slurm.job(jobs["bad"])
    assert (job["JobState"], job["Restarts"], job["ExitCode"]) == ("FAILED", "0", "2:0")


def blocked(pid, signum):
    """Whether the process blocks signum, from the kernel's mask (SigBlk, hexadecimal, bit signum - 1)."""
    with open(f"/proc/{pid}/status") as f:
        mask = next(line.split()[1] for line in f if line.startswith("SigBlk:"))
    return bool(int(mask, 16) >> (signum - 1) & 1)


def test_launch_keeps_a_notice_that_comes_before_the_workers_start(folder, tmp_path):
    # SIGUSR1 to launch.py as soon as it blocks it, seconds before torchrun starts its worker: the worker gets it
    # when it starts, holds it until the training loop unblocks it, saves after its first steps and exits with 3,
    # and launch.py with 3. torchrun itself dies of SIGUSR1.
    cmd = [sys.executable, "tools/launch.py", "--standalone", "--nproc_per_node=1", "aavae.py",
           *tiny_args(folder, tmp_path, "--max_steps", "30")]
    p = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: p.poll() is not None or blocked(p.pid, signal.SIGUSR1), 30, "SIGUSR1 blocked by launch.py")
    assert p.poll() is None and launch.children(p.pid) == []  # no worker yet
    p.send_signal(signal.SIGUSR1)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == misc.EXIT_PREEMPTED == 3, out
    stopped = stopped_steps(out)
    assert len(stopped) == 1 and 1 <= stopped[0] <= 2, out  # the process group's flags are read a step late
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == stopped[0]
    assert "launch.py: the workers saved their checkpoint at a scheduler's notice" in out


def test_launch_says_with_its_exit_status_how_the_workers_ended_and_refuses_restarts():
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure
    failed = lambda *codes: {r: ProcessFailure(local_rank=r, pid=1, exitcode=c, error_file="")
                             for r, c in enumerate(codes)}
    assert launch.exit_status(failed(3)) == launch.exit_status(failed(3, -signal.SIGTERM)) == 3  # the rest: torchrun's
    assert launch.exit_status(failed(3, 1)) == 1  # a crash beside a save is a crash
    assert launch.exit_status(failed(2, -signal.SIGTERM)) == 2
    assert launch.exit_status(failed(-signal.SIGKILL)) == launch.exit_status(failed(1, 2)) == 1
    with pytest.raises(misc.UserError, match="--max-restarts would restart a group that stopped at a"):
        launch.launch(["--max-restarts=1", "--standalone", "--nproc_per_node=1", "aavae.py"])
