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
            extra.load_state_dict(ckpt["extra"] if "extra" in ckpt else ckpt["adversary"])  # its key before 78679e8
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
        if self.raw_model.variational and self.raw_model.log_scale is not None:  # None: a Bernoulli likelihood
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


# ----------------------------------------------------------------------------------------------------
# What linear_eval.py reads of a run (its encoder) and keeps of its own (the probe's checkpoint)


def infer_architecture(state):
    """The torchvision ResNet a plain encoder state dict belongs to, from its keys alone."""
    if "conv1.weight" not in state or not any(k.startswith("layer4.") for k in state):
        return None
    blocks = len({k.split(".")[1] for k in state if k.startswith("layer3.")})
    bottleneck = "layer1.0.conv3.weight" in state
    return {(2, False): "resnet18", (6, False): "resnet34", (6, True): "resnet50"}.get((blocks, bottleneck))


def load_encoder(args):
    """linear_eval.py's encoder: (encoder state dict, projection head's or None, info), read with weights_only=True
    from a run's checkpoint.pt or encoder.pth (or None for --random_init). info holds encoder, stem, latent_dim,
    source."""
    if args.random_init:
        stem = args.stem if args.stem != "auto" else None
        return None, None, {"encoder": args.encoder, "stem": stem, "source": "random init"}
    ckpt = load_checkpoint(args.checkpoint)
    if not isinstance(ckpt, dict):
        raise UserError(f"{args.checkpoint} holds a {type(ckpt).__name__}, not a state dict or a checkpoint of aavae.py")
    if "model" in ckpt and "args" in ckpt:  # checkpoint.pt: the run's own record of its architecture
        run = ckpt["args"]
        state = {k[len("encoder."):]: v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
        proj = {k[len("projection."):]: v for k, v in ckpt["model"].items() if k.startswith("projection.")}
        info = {"encoder": run.get("encoder") if run.get("arch", "resnet") == "resnet" else run["arch"],
                "stem": run.get("stem"), "latent_dim": run.get("latent_dim"),
                "variational": "log_var.weight" in proj,  # a Gaussian latent's head has a second output
                "method": run.get("method"), "arch": run.get("arch", "resnet")}
    else:  # encoder.pth: a plain torchvision state dict
        state, proj = ckpt, None
        info = {"encoder": infer_architecture(state), "stem": None}
        if info["encoder"] is None:
            raise UserError(f"{args.checkpoint} is not the state dict of a torchvision ResNet-18/34/50 encoder")
        if state["conv1.weight"].shape[-1] == 3:
            info["stem"] = "cifar"
        else:  # 7x7: the maxpool has no weights; the run's args.json says, if it is beside the file
            beside = os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "args.json")
            if os.path.exists(beside):
                with open(beside) as f:
                    info["stem"] = json.load(f).get("stem")
    if args.encoder and args.encoder != info["encoder"]:
        raise UserError(f"{args.checkpoint} holds a {info['encoder']} encoder, not the --encoder {args.encoder} asked for")
    if args.stem != "auto":
        info["stem"] = args.stem
    info["source"] = args.checkpoint
    return state, proj, info


PROBE_CHECKPOINT = "probe_checkpoint.pt"


def probe_args(args):
    """The arguments that define a probe: all but those that may differ when it is resumed."""
    return {k: v for k, v in vars(args).items() if k not in ("output_dir", "overwrite", "workers")}


def resume_probe(args, modules, optimizer):
    """linear_eval.py's resume. The epoch to start from: 0, or that of OUTPUT_DIR/probe_checkpoint.pt, whose module and optimizer
    states are then loaded. A checkpoint of a probe with other arguments is refused rather than mixed in."""
    path = os.path.join(args.output_dir, PROBE_CHECKPOINT)
    if not os.path.exists(path):
        return 0
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or not {"epoch", "args", "optimizer", *modules} <= set(ckpt):
        raise UserError(f"{path} is not a probe checkpoint of linear_eval.py --mode {args.mode}; pass --overwrite to start afresh")
    changes = args_differ(ckpt["args"], probe_args(args))
    if changes:
        raise UserError(f"{path} belongs to a probe with other arguments ({changes}); "
                        "choose another --output_dir, or pass --overwrite to start afresh there")
    for name, module in modules.items():
        module.load_state_dict(ckpt[name])
    optimizer.load_state_dict(ckpt["optimizer"])
    trim_log(os.path.join(args.output_dir, "log.jsonl"), "epoch", ckpt["epoch"])  # later epochs are redone
    print0(f"resuming the probe from {path} at epoch {ckpt['epoch']}")
    return ckpt["epoch"]


def default_output_dir(args):
    """runs/eval-ENCODER-PROTOCOL-DATA: the encoder (the folder of --checkpoint, which is its run's, or
    random-ARCH), the protocol (mode, cached features, label fraction) and the data, so that probes of other
    encoders or by other protocols never meet in one directory."""
    path = os.path.normpath(args.checkpoint or "")
    encoder = (f"random-{args.encoder}" if args.random_init  # a checkpoint named without a folder: its own name
               else os.path.basename(os.path.dirname(path)) or os.path.splitext(os.path.basename(path))[0])
    clusters = getattr(args, "clusters", None)
    protocol = args.mode + ("-cached" if args.cached_features else "") + (f"-k{clusters}" if clusters else "")
    if args.label_fraction is not None or args.subset_file is not None:
        protocol += f"-{args.label_fraction:g}" if args.subset_file is None else \
            "-" + os.path.splitext(os.path.basename(args.subset_file))[0]
    data = os.path.basename(os.path.normpath(args.data_path)) if args.dataset == "folder" else args.dataset
    return os.path.join("runs", f"eval-{encoder}-{protocol}-{data}")


def check_eval_dir(args):
    """An evaluation's output directory, before anything is read: not a pretraining run's (its log.jsonl is not
    ours to replace), and without a result.json unless --overwrite. Returns the result's path."""
    result_path = os.path.join(args.output_dir, "result.json")
    if os.path.exists(os.path.join(args.output_dir, "args.json")):
        raise UserError(f"{args.output_dir} holds a pretraining run of aavae.py; give linear_eval.py an --output_dir of its own")
    if os.path.exists(result_path) and not args.overwrite:
        raise UserError(f"{result_path} already exists; choose another --output_dir or pass --overwrite")
    return result_path


def open_eval_dir(args):
    """Makes the directory; a fresh probe starts with an empty log, an interrupted one keeps its log and
    resumes from its checkpoint (resume_probe)."""
    os.makedirs(args.output_dir, exist_ok=True)
    if is_main() and (args.overwrite or not os.path.exists(os.path.join(args.output_dir, PROBE_CHECKPOINT))):
        for name in ("log.jsonl", PROBE_CHECKPOINT, "result.json"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(args.output_dir, name))
    if dist.is_initialized():
        dist.barrier()
