"""Precision x strategy x compile matrix: WGAN-GP, CycleGAN and DDPM trained briefly under 32/bf16-mixed/16-mixed, on
1 device, under DDP and (DDPM) sharded, eager and with ``compile=True``.

Each short run is checked for finite parameters, finite samples of the right shape and identical parameters across
ranks, and timed.

    python benchmarks/precision_matrix.py                                  # on a GPU machine: the prepared check
    python benchmarks/precision_matrix.py --accelerator cpu --steps 5      # CPU smoke run (small nets, gloo DDP x2)
    python benchmarks/precision_matrix.py --models wgan_gp --precisions 16-mixed --strategies ddp --json-out rows.json
    python benchmarks/precision_matrix.py --modes eager                    # without the compiled cells
    python benchmarks/precision_matrix.py --strategies sharded --models ddpm   # sharded training only

Strategies: ``single`` (one device), ``ddp`` (every device) and ``sharded`` (every device under Lightning's
``ModelParallelStrategy``, each net sharded with FSDP2 ``fully_shard``: see docs/scaling.md; the games are refused
there, so their sharded cells read "n/a").

Models (random in-memory data, nothing is downloaded): ``wgan_gp`` -- `lightning_gen.WGANGP` with DCGAN-shaped nets at
32 px, batch 64 (the gradient penalty under loss scaling); ``cyclegan`` -- `lightning_gen.CycleGAN` with tiny ResNet
generators and PatchGAN discriminators at 64 px; ``ddpm`` -- `lightning_gen.DDPM` with a small `nets.UNet` at 32 px.
``--small`` (the default on CPU) shrinks widths and batches, and CycleGAN to 32 px and DDPM to 16 px.

Every cell (model, precision, strategy) runs in its own process with a timeout, so a crash or a hung collective in one
cell cannot take down the table. A cell passes when training ran all its batches, every parameter is finite,
``sample()`` (CycleGAN: ``sample(n, a=images)``) returns finite values of the right shape (drawn on the training
device under the precision's predict context), and under DDP every rank ends with bit-identical parameters.

Throughput is training batches per second over ``--steps`` batches after ``--warmup`` batches, timed on rank 0 with
the device synchronized. A batch is one critic step for WGAN-GP (a generator step every n_critic = 5 batches), one
generator plus one discriminator step for CycleGAN and one optimizer step for DDPM. "x32" is the ratio to the same
model and strategy at precision 32 in this run: numbers are only comparable within one run (same machine, same load).
"skipped" lists the ``train/skipped_steps/<player>`` metrics a module logs (16-mixed), "-" when it logs none;
"scale" is the final loss scale of Lightning's GradScaler (16-mixed) when the run used it, "-" when not (the GAN
modules scale each player with a scaler of their own); it starts at 65536, halves on every step with inf/NaN
gradients and grows only after 2000 clean steps, so in a short run each halving is one skipped optimizer step.
"mode" is ``eager`` or ``compiled`` (the module's ``compile=True``: its nets under ``torch.compile``, the inductor
backend); "xeager" is a compiled cell's ratio to the eager cell of the same model, precision and strategy, and
"recompiles" the frames TorchDynamo compiled during the timed batches (0 means every graph was built in the warm-up;
compiled cells warm up for at least 6 batches so that WGAN-GP's first generator step falls inside it).
The exit status is 1 when any cell fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

MODELS = ("wgan_gp", "cyclegan", "ddpm")
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
STRATEGIES = ("single", "ddp", "sharded")
SHARDABLE = ("ddpm",)  # the games refuse sharded strategies (docs/scaling.md)
MODES = ("eager", "compiled")
COMPILED_MIN_WARMUP = 6  # WGAN-GP (n_critic 5) builds its generator-step graphs in batch 5
ROW_MARKER = "PRECISION_MATRIX_ROW "
NO_CUDA = ("no CUDA device: this script is the prepared GPU check; run it where a GPU is present, or pass "
           "--accelerator cpu for a smoke run")


@dataclass
class Sizes:
    """Net widths, batch sizes and sampling lengths of one run (full on a GPU, shrunk by ``--small``)."""

    gan_width: int
    gan_batch: int
    cycle_width: int
    cycle_blocks: int
    cycle_batch: int
    cycle_size: int
    unet_width: int
    ddpm_batch: int
    ddpm_size: int
    ddpm_timesteps: int
    ddpm_sampling_steps: int
    num_samples: int


FULL = Sizes(gan_width=64, gan_batch=64, cycle_width=32, cycle_blocks=3, cycle_batch=8, cycle_size=64, unet_width=64,
             ddpm_batch=64, ddpm_size=32, ddpm_timesteps=1000, ddpm_sampling_steps=50, num_samples=8)
SMALL = Sizes(gan_width=8, gan_batch=8, cycle_width=8, cycle_blocks=1, cycle_batch=2, cycle_size=32, unet_width=8,
              ddpm_batch=8, ddpm_size=16, ddpm_timesteps=50, ddpm_sampling_steps=5, num_samples=4)


# -- one cell (runs in its own process; under DDP Lightning re-executes this script with the same argv) -------------
class BatchPool(torch.utils.data.Dataset):
    """A map-style dataset whose items are whole batches, cycling over a few pre-drawn random ones (no collation cost).

    With ``batch_size=None`` loaders, Lightning's DistributedSampler hands each rank different items, so the ranks see
    different data and identical parameters at the end really test the gradient averaging.
    """

    def __init__(self, batches: list[Any], length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        return self.batches[index % len(self.batches)]


def build_model(name: str, sizes: Sizes, compile: bool = False) -> tuple[Any, list[Any], dict[str, Any]]:
    """The module (its nets compiled when ``compile``), a few random batches for it, and the keyword arguments of its
    ``sample()`` call."""
    import lightning_gen
    from lightning_gen.nets import DCGANDiscriminator, DCGANGenerator, PatchGANDiscriminator, ResnetGenerator, UNet

    rng = torch.Generator().manual_seed(1234)

    def images(batch: int, size: int) -> torch.Tensor:
        return torch.rand(batch, 3, size, size, generator=rng) * 2 - 1

    if name == "wgan_gp":
        g = DCGANGenerator(latent_dim=128, image_size=32, channels=3, base_channels=sizes.gan_width)
        d = DCGANDiscriminator(image_size=32, channels=3, base_channels=sizes.gan_width, batch_norm=False)
        return lightning_gen.WGANGP(g, d, compile=compile), [images(sizes.gan_batch, 32) for _ in range(8)], {}
    if name == "cyclegan":
        def gen() -> torch.nn.Module:
            return ResnetGenerator(3, 3, base_channels=sizes.cycle_width, num_blocks=sizes.cycle_blocks)

        def dis() -> torch.nn.Module:
            return PatchGANDiscriminator(3, base_channels=sizes.cycle_width, num_layers=3)

        model = lightning_gen.CycleGAN(gen(), gen(), dis(), dis(), compile=compile)
        px = sizes.cycle_size
        batches = [{"a": images(sizes.cycle_batch, px), "b": images(sizes.cycle_batch, px)} for _ in range(8)]
        return model, batches, {"a": images(sizes.num_samples, px)}
    if name == "ddpm":
        px = sizes.ddpm_size
        unet = UNet(channels=3, image_size=px, base_channels=sizes.unet_width, channel_mults=(1, 2, 2))
        model = lightning_gen.DDPM(unet, num_timesteps=sizes.ddpm_timesteps, sampling_steps=sizes.ddpm_sampling_steps,
                                   compile=compile)
        return model, [images(sizes.ddpm_batch, px) for _ in range(8)], {}
    raise ValueError(f"unknown model {name!r}; choose from {list(MODELS)}")


def parameter_digest(module: torch.nn.Module, buffers: bool = False) -> int:
    """A 63-bit hash of the exact bytes of every parameter (or buffer), to compare across ranks."""
    from torch.distributed.tensor import DTensor

    h = hashlib.sha256()
    tensors = module.buffers() if buffers else module.parameters()
    for t in tensors:
        t = t.full_tensor() if isinstance(t, DTensor) else t  # a sharded parameter, gathered (every rank calls this)
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") >> 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cell_callback(warmup: int, steps: int, num_samples: int, sample_kwargs: dict[str, Any]) -> Any:
    """The Lightning callback that times the batches and runs the end-of-training checks (built lazily: imports L)."""
    import lightning as L

    from lightning_gen.modules.compile import compile_counts

    class Probe(L.Callback):
        """Counts and times training batches (and TorchDynamo's compiles in them); at the end checks finiteness, rank
        agreement and ``sample()``."""

        def __init__(self) -> None:
            self.batches, self.start, self.end = 0, None, None
            self.frames_at_start, self.recompiles = 0, None
            self.result: dict[str, Any] = {}

        def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                                 batch_idx: int) -> None:  # noqa: D102
            if warmup == 0 and batch_idx == 0:
                _sync(pl_module.device)
                self.frames_at_start = compile_counts()["frames"]
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                               batch_idx: int) -> None:  # noqa: D102
            self.batches += 1
            if self.batches == warmup:
                _sync(pl_module.device)
                self.frames_at_start = compile_counts()["frames"]
                self.start = time.perf_counter()
            elif self.batches == warmup + steps:
                _sync(pl_module.device)
                self.end = time.perf_counter()
                self.recompiles = compile_counts()["frames"] - self.frames_at_start

        def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
            r = self.result
            r["finite_params"] = all(bool(torch.isfinite(p).all()) for p in pl_module.parameters())
            digests = torch.tensor([parameter_digest(pl_module), parameter_digest(pl_module, buffers=True)],
                                   dtype=torch.int64, device=pl_module.device)
            gathered = trainer.strategy.all_gather(digests).reshape(-1, 2).cpu()
            r["ranks_equal"] = bool((gathered[:, 0] == gathered[0, 0]).all())
            r["buffers_equal"] = bool((gathered[:, 1] == gathered[0, 1]).all())  # info only: BatchNorm stats per rank
            # sharded nets gather their parameters when called: then every rank samples together
            if trainer.global_rank != 0 and not getattr(pl_module, "samples_collectively", False):
                return
            kwargs = {k: v.to(pl_module.device) for k, v in sample_kwargs.items()}
            try:
                with trainer.precision_plugin.predict_step_context():
                    out = pl_module.sample(num_samples, **kwargs)
            except Exception as err:  # reported in the row, which is what the table is for
                r["sample_error"] = _one_line(err)
                return
            if trainer.global_rank != 0:
                return
            expected = tuple(kwargs["a"].shape) if "a" in kwargs else None
            r["sample_shape"] = list(out.shape)
            r["sample_shape_ok"] = out.shape[0] == num_samples and (expected is None or tuple(out.shape) == expected)
            r["sample_finite"] = bool(torch.isfinite(out).all())

    return Probe()


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def _rank_is_zero(trainer: Optional[Any]) -> bool:
    if trainer is not None:
        return trainer.global_rank == 0
    return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


def _strategy(name: str, devices: int) -> Any:
    """The Trainer's strategy for a cell: ``auto`` on one device, ``ddp``, or every device data-parallel and sharded."""
    if name == "sharded":
        from lightning.pytorch.strategies import ModelParallelStrategy

        return ModelParallelStrategy(data_parallel_size=devices, tensor_parallel_size=1)
    return "ddp" if name == "ddp" else "auto"


def run_cell(args: argparse.Namespace) -> int:
    """Train one (model, precision, strategy) cell and print its JSON row on rank 0."""
    import lightning as L
    from lightning.pytorch.plugins.precision import MixedPrecision

    model_name, precision, strategy, mode = args.cell.split(":")
    sizes = SMALL if args.small else FULL
    row: dict[str, Any] = {"model": model_name, "precision": precision, "strategy": strategy, "mode": mode,
                           "result": "fail", "batches_per_s": None, "skipped": None, "reason": ""}
    trainer = None
    try:
        cpu = args.accelerator == "cpu"
        devices = (args.cpu_ddp_devices if cpu else torch.cuda.device_count()) if strategy != "single" else 1
        if cpu:  # share the cores between the ranks instead of oversubscribing them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // devices))
        L.seed_everything(0, verbose=False)
        model, batches, sample_kwargs = build_model(model_name, sizes, compile=mode == "compiled")
        warmup = max(args.warmup, COMPILED_MIN_WARMUP) if mode == "compiled" else args.warmup
        total = warmup + args.steps
        loader = torch.utils.data.DataLoader(BatchPool(batches, total * devices), batch_size=None, shuffle=False,
                                             pin_memory=not cpu)
        precision_kwargs: dict[str, Any] = {"precision": precision}
        if cpu and precision == "16-mixed":  # Lightning turns 16-mixed into bf16-mixed on CPU unless told this way
            precision_kwargs = {"plugins": [MixedPrecision("16-mixed", device="cpu",
                                                           scaler=torch.amp.GradScaler("cpu"))]}
        probe = _cell_callback(warmup, args.steps, sizes.num_samples, sample_kwargs)
        trainer = L.Trainer(
            accelerator=args.accelerator, devices=devices, strategy=_strategy(strategy, devices),
            max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[probe],
            log_every_n_steps=total,  # the GAN modules log only every log_every_n_steps batches: just the last one
            **precision_kwargs,
        )
        trainer.fit(model, train_dataloaders=loader)
        r = probe.result
        row.update(batches=probe.batches, generator_steps=trainer.global_step, world_size=trainer.world_size,
                   buffers_equal=r.get("buffers_equal"), sample_shape=r.get("sample_shape"))
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        # GradScaler makes its scale tensor on first use: None means this run never used Lightning's scaler (the GAN
        # modules scale each player with a scaler of their own and log skipped steps instead).
        used = scaler is not None and getattr(scaler, "_scale", None) is not None
        row["loss_scale"] = float(scaler.get_scale()) if used else None
        metrics = {**trainer.logged_metrics, **trainer.callback_metrics}
        skipped = {k.removeprefix("train/skipped_steps").lstrip("/") or "all": int(float(v))
                   for k, v in metrics.items() if k.startswith("train/skipped_steps")}
        row["skipped"] = skipped or None
        if mode == "compiled":
            row["recompiles"] = probe.recompiles
        if probe.start is not None and probe.end is not None:
            row["batches_per_s"] = args.steps / (probe.end - probe.start)
        problems = []
        if probe.batches != total:
            problems.append(f"ran {probe.batches} of {total} batches")
        if not r.get("finite_params", False):
            problems.append("non-finite parameters")
        if "sample_error" in r:
            problems.append(f"sample() raised {r['sample_error']}")
        elif not r.get("sample_shape_ok", False):
            problems.append(f"sample() returned shape {r.get('sample_shape')}")
        elif not r.get("sample_finite", False):
            problems.append("sample() returned non-finite values")
        if not r.get("ranks_equal", False):
            problems.append(f"parameters differ across the {trainer.world_size} ranks")
        row["result"] = "fail" if problems else "pass"
        row["reason"] = "; ".join(problems)
    except Exception as err:  # reported in the row, which is what the table is for; the traceback goes to stderr
        import traceback

        traceback.print_exc()
        row["reason"] = _one_line(err)
    if _rank_is_zero(trainer):
        print(ROW_MARKER + json.dumps(row), flush=True)
    # gloo's/NCCL's worker threads can abort the interpreter's exit unless the group is destroyed first
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


# -- the parent: one subprocess per cell, a table as the cells finish -----------------------------------------------
def run_cell_process(cell: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one cell as a child process (its own process group, so DDP ranks die with it on a timeout)."""
    model, precision, strategy, mode = cell.split(":")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--cell", cell, "--accelerator", args.accelerator,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--cpu-ddp-devices", str(args.cpu_ddp_devices)]
    if args.small:
        cmd.append("--small")
    base = {"model": model, "precision": precision, "strategy": strategy, "mode": mode, "result": "fail",
            "batches_per_s": None, "skipped": None}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=args.cell_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the cell and the DDP ranks it launched
        proc.communicate()
        return {**base, "reason": f"timeout (> {args.cell_timeout:g} s)", "seconds": time.perf_counter() - start}
    seconds = time.perf_counter() - start
    rows = [json.loads(line[len(ROW_MARKER):]) for line in out.splitlines() if line.startswith(ROW_MARKER)]
    if args.verbose or not rows:
        sys.stderr.write(err)
    if not rows:
        last = next((line.strip() for line in reversed(err.splitlines()) if line.strip()), "no output")
        return {**base, "reason": f"exit code {proc.returncode}, no result: {last[:200]}", "seconds": seconds}
    return {**rows[-1], "seconds": seconds}


def _fmt_skipped(skipped: Optional[dict[str, int]]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(skipped.items())) if skipped else "-"


def _fmt_scale(scale: Optional[float]) -> str:
    return "-" if scale is None else f"{scale:.0f}" if scale < 1e7 else f"{scale:.1e}"


def main() -> int:
    """Parse arguments; run one cell (``--cell``) or the whole matrix and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accelerator", choices=["cuda", "cpu"], default=None,
                        help="default: cuda (the script exits when no CUDA device is present)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="eager, and compiled (the module's compile=True)")
    parser.add_argument("--steps", type=int, default=60, help="timed training batches per cell")
    parser.add_argument("--warmup", type=int, default=None, help="untimed batches first (default 10; 1 with --small)")
    parser.add_argument("--small", action=argparse.BooleanOptionalAction, default=None,
                        help="narrow nets and small batches (default: on for --accelerator cpu)")
    parser.add_argument("--cpu-ddp-devices", type=int, default=2, help="DDP processes (gloo) with --accelerator cpu")
    parser.add_argument("--cell-timeout", type=float, default=300.0, help="seconds before a cell counts as hung")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the rows to this JSON file")
    parser.add_argument("--verbose", action="store_true", help="pass every cell's stderr through")
    parser.add_argument("--cell", default=None, help=argparse.SUPPRESS)  # MODEL:PRECISION:STRATEGY:MODE, internal
    args = parser.parse_args()
    if args.accelerator is None:
        if not torch.cuda.is_available():
            print(NO_CUDA, file=sys.stderr)
            return 2
        args.accelerator = "cuda"
    if args.accelerator == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    if args.small is None:
        args.small = args.accelerator == "cpu"
    if args.warmup is None:
        args.warmup = 1 if args.small else 10
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    if args.cell:
        return run_cell(args)

    import lightning as L

    ddp_devices = args.cpu_ddp_devices if args.accelerator == "cpu" else torch.cuda.device_count()
    where = (f"cpu ({os.cpu_count()} cores), gloo DDP x{ddp_devices}" if args.accelerator == "cpu" else
             f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}")
    print(f"precision matrix on {where}; {'small' if args.small else 'full'} sizes; {args.warmup} warm-up + "
          f"{args.steps} timed batches per cell; torch {torch.__version__}, lightning {L.__version__}")
    print("batches/s: training batches per second on rank 0 (WGAN-GP: one critic step per batch, a generator step "
          "every 5; CycleGAN: one G + one D step; DDPM: one step); x32: ratio to precision 32 of the same model and "
          "strategy in this run (eager); xeager: a compiled cell's ratio to its eager cell; recompiles: TorchDynamo "
          "frames compiled during the timed batches")
    header = (f"{'model':<9} {'precision':<10} {'strategy':<11} {'mode':<8} {'result':<7} {'batches/s':>9} {'x32':>5} "
              f"{'xeager':>6} {'recompiles':>10} {'skipped':<29} {'scale':>7} reason")
    print(header)
    print("-" * len(header))
    rows: list[dict[str, Any]] = []
    baseline: dict[tuple[str, str], float] = {}
    eager_rate: dict[tuple[str, str, str], float] = {}
    for model in args.models:
        for strategy in args.strategies:
            for precision in sorted(args.precisions, key=PRECISIONS.index):  # 32 first: the x32 baseline
                for mode in sorted(args.modes, key=MODES.index):  # eager first: the xeager baseline
                    label = "1 device" if strategy == "single" else f"{strategy} x{ddp_devices}"
                    if strategy != "single" and ddp_devices < 2:
                        row = {"model": model, "precision": precision, "strategy": strategy, "mode": mode,
                               "result": "n/a", "batches_per_s": None, "skipped": None, "reason": "one device only"}
                    elif strategy == "sharded" and model not in SHARDABLE:
                        row = {"model": model, "precision": precision, "strategy": strategy, "mode": mode,
                               "result": "n/a", "batches_per_s": None, "skipped": None,
                               "reason": "the games refuse sharded strategies (docs/scaling.md)"}
                    else:
                        row = run_cell_process(f"{model}:{precision}:{strategy}:{mode}", args)
                    rows.append(row)
                    rate = row.get("batches_per_s")
                    if mode == "eager" and rate:
                        eager_rate[(model, strategy, precision)] = rate
                        if precision == "32":
                            baseline[(model, strategy)] = rate
                    ratio = rate / baseline[(model, strategy)] if rate and (model, strategy) in baseline else None
                    eager = eager_rate.get((model, strategy, precision))
                    speedup = rate / eager if rate and eager and mode == "compiled" else None
                    recompiles = row.get("recompiles")
                    print(f"{model:<9} {precision:<10} {label:<11} {mode:<8} {row['result']:<7} "
                          f"{f'{rate:.2f}' if rate else '-':>9} {f'{ratio:.2f}' if ratio else '-':>5} "
                          f"{f'{speedup:.2f}' if speedup else '-':>6} "
                          f"{'-' if recompiles is None else recompiles:>10} "
                          f"{_fmt_skipped(row.get('skipped')):<29} {_fmt_scale(row.get('loss_scale')):>7} "
                          f"{row.get('reason', '')}", flush=True)
    if args.json_out is not None:
        meta = {"accelerator": args.accelerator, "where": where, "small": args.small, "steps": args.steps,
                "modes": args.modes,
                "warmup": args.warmup, "torch": torch.__version__, "lightning": L.__version__}
        args.json_out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        print(f"rows written to {args.json_out}")
    return 1 if any(r["result"] == "fail" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
