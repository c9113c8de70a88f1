"""The run directory of aavae.py: args.json, log.jsonl, checkpoint.pt (and the states a resumed run restores from
it) and encoder.pth. A run resumes only with the arguments it was started with; every file is written atomically
and checkpoints are read with weights_only=True (util/misc.py); rank 0 alone reads the directory, so that nodes
need not share a filesystem. Nothing of the method is here.
"""
import contextlib
import json
import os
import time

import torch
import torch.distributed as dist
from tqdm import tqdm

from util.misc import (UserError, all_reduce, args_differ, broadcast_buffers, broadcast_object, git_sha, is_main,
                       load_checkpoint, native_bf16, print0, provenance, save_atomic, save_atomic_json, trim_log,
                       write_log)


def run_args(args):
    """The arguments that define a run, as plain JSON types."""
    return {k: v for k, v in sorted(vars(args).items())}


RUN_FILES = ("checkpoint.pt", "log.jsonl", "encoder.pth")


def open_output_dir(args, resumable):
    """Rank 0 alone reads the output directory (the other nodes need not share its filesystem) and sends every
    rank its verdict and the checkpoint to resume from, None for a new run."""
    verdict, ckpt = None, None
    if is_main():
        try:
            prepare_output_dir(args, resumable)
            ckpt = resume_checkpoint(args)
        except UserError as e:
            verdict = str(e)
    verdict, ckpt = broadcast_object((verdict, ckpt))
    if verdict:
        raise UserError(verdict)
    return ckpt


def prepare_output_dir(args, resumable):
    """Checks that a run already in output_dir was made with the same training arguments (then it is
    resumed; `resumable` names the arguments that may differ), or, with --overwrite, clears that run's files so that nothing old mixes into the new one."""
    path = os.path.join(args.output_dir, "args.json")
    if not os.path.exists(path):
        return
    if args.overwrite:
        for name in RUN_FILES + ("args.json",):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(args.output_dir, name))
        return
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        raise UserError(f"{path} is unreadable; pass --overwrite to start afresh in {args.output_dir}") from None
    changes = args_differ(old, run_args(args), ignore=set(resumable) | {"provenance"})
    if changes:
        raise UserError(f"{args.output_dir} holds a run with other arguments ({changes}); "
                        "choose another --output_dir, or pass --overwrite to start afresh there")


def resume_checkpoint(args):
    """The checkpoint in output_dir to resume from, or None."""
    ckpt_path = os.path.join(args.output_dir, "checkpoint.pt")
    if not os.path.exists(ckpt_path):
        return None
    ckpt = load_checkpoint(ckpt_path)
    if not isinstance(ckpt, dict) or not {"model", "optimizer", "step"} <= set(ckpt):
        raise UserError(f"{ckpt_path} is not a training checkpoint of aavae.py")
    return ckpt


def save_checkpoint(args, raw_model, optimizer, extra, step, steps_per_epoch):
    """checkpoint.pt: the model, its optimiser, a method's extra state (a discriminator and its optimiser) where
    it has one, the step and the run's arguments."""
    broadcast_buffers(raw_model)
    if is_main():
        more = {"extra": extra.state_dict()} if extra else {}
        save_atomic({"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                     "epoch": step // steps_per_epoch, "args": run_args(args), **more},
                    os.path.join(args.output_dir, "checkpoint.pt"))
    if dist.is_initialized():
        dist.barrier()


def restore(ckpt, model, optimizer, extra, args):
    """Loads a resumed run's states from its checkpoint; returns the step to continue from (0: a new run)."""
    if ckpt is None:
        return 0
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if extra:
            extra.load_state_dict(ckpt["extra"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise UserError(f"the checkpoint in {args.output_dir} does not fit this model ({str(e).splitlines()[0][:200]})") from None
    return ckpt["step"]


def resolve_amp(args, ckpt=None):
    """--amp when it was not given: the precision a resumed run started with (a run begun on a CPU without
    native bf16 stays in fp32 on one with it), else bf16 autocast where it is native (misc.native_bf16)."""
    if args.amp is None:
        args.amp = ckpt["args"]["amp"] if ckpt is not None else native_bf16()
    return args


def finish(args, raw_model, step, steps_per_epoch):
    """Exports the encoder alone: a torchvision ResNet state dict without fc (see README for loading)."""
    if is_main():
        save_atomic(raw_model.encoder.state_dict(), os.path.join(args.output_dir, "encoder.pth"))
        print0(f"done at step {step} (epoch {step / steps_per_epoch:.2f}); encoder weights in "
               f"{os.path.join(args.output_dir, 'encoder.pth')}")


def check_finite(first_bad, args):
    """Stops the run at the first non-finite loss, before anything is saved over the last good checkpoint."""
    bad = all_reduce(first_bad + 1, dist.ReduceOp.MAX if dist.is_initialized() else None).item() - 1
    if bad >= 0:
        raise UserError(f"the loss became non-finite at step {bad}; likely causes: a learning rate too high for "
                        f"batch {args.batch_size}" + (", a learned log_scale collapsing" if args.learn_scale else "")
                        + f" or a large --beta; {os.path.join(args.output_dir, 'checkpoint.pt')} still holds the last good state")


class StepLog:
    """The loop's book-keeping: running sums of the logged metrics and the first non-finite loss, kept on the
    device so that the host never waits for a step between two log lines; every --log_every steps (and at
    the last) one log.jsonl line of their means over steps and processes, with the lr, images per second,
    TFLOP/s and, on a GPU of known peak, the model FLOPs utilisation."""

    def __init__(self, args, sched, device, world, raw_model, flops, peak):
        self.args, self.sched, self.world, self.raw_model = args, sched, world, raw_model
        self.path = os.path.join(args.output_dir, "log.jsonl")
        self.flops, self.peak = flops, peak  # FLOPs per image of one step; the device's bf16 peak (TFLOP/s) or None
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.bar = None

    def start(self, start_step):
        trim_log(self.path, "step", start_step)  # lines of steps after the checkpoint are about to be redone
        self.bar = tqdm(total=self.sched.last_step, initial=start_step, disable=not is_main() or None, dynamic_ncols=True)
        self.sums, self.count = {}, 0
        self.t0, self.since = time.perf_counter(), start_step

    def add(self, step, loss, parts, optimizer):
        finite = torch.isfinite(loss.detach())
        self.first_bad = torch.where((self.first_bad < 0) & ~finite, torch.full_like(self.first_bad, step), self.first_bad)
        for k, v in {"loss": loss.detach(), **parts}.items():
            self.sums[k] = self.sums.get(k, 0) + v.float()
        self.count += 1
        self.bar.update(1)
        done = step + 1
        if done % self.args.log_every == 0 or done == self.sched.last_step:
            self.write(done, optimizer)

    def write(self, done, optimizer):
        self.check_finite()
        means = all_reduce(torch.stack(list(self.sums.values()))) / (self.count * self.world)
        row = {"step": done, "epoch": round(done / self.sched.steps_per_epoch, 4), **dict(zip(self.sums, means.tolist())),
               "lr": optimizer.param_groups[0]["lr"],
               "img_per_s": (done - self.since) * self.args.batch_size / (time.perf_counter() - self.t0)}
        row["tflop_per_s"] = row["img_per_s"] * self.flops / 1e12  # all processes together
        if self.peak:
            row["mfu"] = row["tflop_per_s"] / (self.peak * self.world)
        if self.raw_model.variational:
            row["log_scale"] = self.raw_model.log_scale.item()
        write_log(self.path, row)
        self.bar.set_postfix(loss=f"{row['loss']:.4g}", img_s=f"{row['img_per_s']:.0f}")
        self.sums, self.count = {}, 0
        self.t0, self.since = time.perf_counter(), done

    def check_finite(self):
        check_finite(self.first_bad, self.args)

    def close(self):
        self.bar.close()


def announce(args, train_split, val_split, spec, device, world, sched, log, kept_precision):
    """args.json (with provenance) and the run's header: what it trains, on what, in which precision, and its
    batch, lr and length."""
    os.makedirs(args.output_dir, exist_ok=True)
    if is_main():
        save_atomic_json({**run_args(args), "provenance": provenance()}, os.path.join(args.output_dir, "args.json"))
    print0(f"git {git_sha()} | " + " ".join(f"{k}={v}" for k, v in run_args(args).items()))
    print0(f"{args.method}: {len(train_split)} training / {len(val_split)} held-out images at {spec.size}px, "
           f"{'memory' if train_split.images is not None else 'stream'} data path, device {device}, {world} process(es)")
    print0(f"{log.flops / 1e9:.2f} GFLOP per image per training step"
           + (f"; device peak {log.peak:g} TFLOP/s bf16" if log.peak else "")
           + f"; {'bf16 autocast' if args.amp else 'fp32'}" + (" as the run began (--amp or --no-amp to change)" if kept_precision else ""))
    print0(f"batch {args.batch_size} global = {world} x {args.batch_size // world}; lr {args.lr:g} at batch "
           f"{args.base_batch} -> {sched.lr:g}; {sched.steps_per_epoch} steps/epoch, warm-up {sched.warmup_steps} steps, "
           f"{sched.total_steps} steps in {args.epochs} epochs"
           + (f", stopping at {sched.last_step}" if sched.last_step < sched.total_steps else ""))
