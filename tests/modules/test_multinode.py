"""Two simulated nodes of one CPU process each, launched from outside as a cluster launches them: a GAN game and
CycleGAN with the environment variables a scheduler sets (``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``), DDPM through ``torchrun --nnodes 2``; the trainer gets ``num_nodes=2``.

Every run is ``tests/scripts/resume_case.py --nodes 2`` (see its docstring): the uninterrupted run, then a resume from
the global rank 0's mid-epoch checkpoint on the same layout. Checked: the parameters are identical on both ranks at
the end; each rank trained on its own half of the data in epoch 0 (the ``DistributedSampler`` Lightning puts in);
the resume repeats the uninterrupted run bit for bit; a checkpoint resumed on another number of processes (2 -> 1 and
1 -> 2) warns and continues with fresh, distinct per-rank noise streams. The cluster launch scripts in
examples/cluster run a shipped recipe on two nodes: torchrun_fit.sh (one W&B run and one checkpoint folder, global
rank 0's, not one per node) and slurm_fit.sbatch under a simulated ``srun``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .test_resume_kill import image_folders  # noqa: F401 (the module-scoped fixture of the CycleGAN case's images)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "resume_case.py"
TIMEOUT = 300
# (max_steps, the mid-epoch periodic checkpoint the resume starts from) per case; see SHAPES in test_resume_kill
CASES = {"gan": (12, "epoch=1-step=6.ckpt"), "cyclegan": (14, "epoch=1-step=6.ckpt"),
         "ddpm": (40, "epoch=1-step=18.ckpt")}
REMAPPED = "Resuming a checkpoint written by {} process(es) on {}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_together(commands: list[tuple[list[str], dict[str, str]]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Run the ``(command, environment)`` pairs at once, each in a session of its own (a timeout kills everything
    they started) with its output in a file (a full pipe cannot stall a node that the other node waits for)."""
    procs, logs = [], []
    for i, (cmd, env) in enumerate(commands):
        logs.append((cwd / f".node{i}_{_free_port()}.out", cwd / f".node{i}_{_free_port()}.err"))
        with open(logs[-1][0], "w") as out, open(logs[-1][1], "w") as err:
            procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True,
                                          start_new_session=True))
    timed_out = False
    for proc in procs:
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            timed_out = True
            for p in procs:
                os.killpg(p.pid, signal.SIGKILL)
            proc.wait()
    note = f"\n[test] a node ran past {TIMEOUT} s and every node's process group was killed" if timed_out else ""
    return [subprocess.CompletedProcess(p.args, p.returncode, out.read_text(), err.read_text() + note)
            for p, (out, err) in zip(procs, logs)]


def _launch_nodes(argv: list[str], cwd: Path, torchrun: bool = False,
                  wandb_mode: str = "disabled") -> list[subprocess.CompletedProcess]:
    """Run two "nodes" of ``python ARGV`` on localhost: with a scheduler's environment variables, or ``torchrun``."""
    port, commands = _free_port(), []
    for node in (0, 1):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": wandb_mode, "OMP_NUM_THREADS": "1"}
        if torchrun:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                   "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port)]
        else:
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK=str(node), LOCAL_RANK="0",
                       WORLD_SIZE="2")
            cmd = [sys.executable]
        commands.append(([*cmd, *argv], env))
    return _run_together(commands, cwd)


def _launch_one(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``resume_case.py ARGS`` in one plain process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def _output(procs: list[subprocess.CompletedProcess]) -> str:
    return "\n".join(p.stdout[-2000:] + p.stderr[-3000:] for p in procs)


@pytest.fixture(scope="module")
def multinode(tmp_path_factory: pytest.TempPathFactory, image_folders: Path) -> dict:  # noqa: F811
    """Four launches: GAN on two env-var nodes; one plain process (a GAN run, and the 2-node GAN checkpoint resumed
    on it); CycleGAN on two env-var nodes (with the 1-process checkpoint resumed on two nodes); DDPM under torchrun."""
    root = tmp_path_factory.mktemp("multinode")

    def chain(case: str, *first_run_options: str) -> list[str]:
        """resume_case.py's runs: the uninterrupted one, then the resume (--nodes, like --devices, goes first)."""
        steps, ckpt = CASES[case]
        return [str(SCRIPT), case, str(root / case / "full"), str(steps), "--nodes", "2", *first_run_options,
                "--then", case, str(root / case / "resumed"), str(steps), "--ckpt",
                str(root / case / "full" / "steps" / ckpt)]

    gan_ckpt = root / "gan" / "full" / "steps" / CASES["gan"][1]
    one_ckpt = root / "one" / "full" / "steps" / CASES["gan"][1]
    images = ["--images", str(image_folders), "--num-workers", "1"]
    launches = {
        "gan": _launch_nodes(chain("gan"), root),
        "one": [_launch_one(["gan", str(root / "one" / "full"), "12", "--then", "gan", str(root / "one" / "from2"),
                             "12", "--ckpt", str(gan_ckpt)], root)],
        "cyclegan": _launch_nodes([*chain("cyclegan", *images), "--then", "gan", str(root / "from1"), "12", "--ckpt",
                                   str(one_ckpt)], root),
        "ddpm": _launch_nodes(chain("ddpm"), root, torchrun=True),
    }
    return {"root": root, "launches": launches}


def _ranks(folder: Path, output: str, world: int = 2) -> list[dict]:
    files = [folder / f"rank{r}.pt" for r in range(world)]
    assert all(f.is_file() for f in files), output
    return [torch.load(f, weights_only=False) for f in files]


def _assert_nodes_equal(ranks: list[dict]) -> None:
    """Every weight, EMA and BatchNorm statistic is the same on both nodes (CycleGAN's image pools are per rank)."""
    keys = [key for key in ranks[0]["state_dict"] if not key.startswith(("pool_a.", "pool_b."))]
    assert keys
    for key in keys:
        assert torch.equal(ranks[0]["state_dict"][key], ranks[1]["state_dict"][key]), f"{key} differs between nodes"


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_two_simulated_nodes_keep_ranks_identical_on_distinct_shards_and_resume_bit_for_bit(case, multinode):
    """Parameters identical on both nodes; disjoint halves of the data in epoch 0; the resume from the global rank 0's
    mid-epoch checkpoint ends exactly where the uninterrupted run ended, on every rank."""
    procs = multinode["launches"][case]
    output = _output(procs)
    assert [p.returncode for p in procs] == [0, 0], output
    folder = multinode["root"] / case
    full, resumed = _ranks(folder / "full", output), _ranks(folder / "resumed", output)
    steps = CASES[case][0]
    assert [r["world_size"] for r in full] == [2, 2] and [r["global_step"] for r in full] == [steps, steps]
    assert "GLOBAL_RANK: 1" in procs[1].stdout + procs[1].stderr  # the second node really was global rank 1
    _assert_nodes_equal(full)
    seen = [r["seen"] for r in full]
    per_rank = {"gan": 15 * 32, "ddpm": 15 * 32, "cyclegan": 11 * 4}[case]  # batches per epoch x batch per rank
    assert len(seen[0]) == len(seen[1]) == per_rank
    assert len(set(seen[0]) | set(seen[1])) == 2 * per_rank  # no sample on both nodes, none twice on one
    if case != "cyclegan":  # the toy set each node generated in memory is the same: its halves make up all of it
        sys.path.insert(0, str(SCRIPT.parent))
        from resume_case import _fingerprints, _toy

        whole = {f for batch in _toy(2).train_dataloader() for f in _fingerprints(batch)}
        assert len(whole) == 2 * per_rank and set(seen[0]) | set(seen[1]) == whole
    assert not torch.equal(full[0]["rng_at_start"], full[1]["rng_at_start"])  # each node its own noise stream
    for rank in (0, 1):
        assert resumed[rank]["global_step"] == steps
        for key, value in full[rank]["state_dict"].items():
            assert torch.equal(value, resumed[rank]["state_dict"][key]), f"rank {rank}: {key} differs after resume"
        for i, (a, b) in enumerate(zip(full[rank]["optimizers"], resumed[rank]["optimizers"])):
            for param, state in a["state"].items():
                for field, value in state.items():
                    assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][param][field])), \
                        f"rank {rank}: optimizer {i} {param}.{field} differs after resume"


@pytest.mark.slow
def test_a_two_node_checkpoint_resumed_on_one_process_warns_and_trains_on(multinode):
    """2 -> 1 process: a warning names the mismatch; the run reaches max_steps from the restored weights, with a
    noise stream of its own (not the one a fresh single-process run starts with)."""
    (proc,) = multinode["launches"]["one"]
    assert proc.returncode == 0, _output([proc])
    assert REMAPPED.format(2, 1) in proc.stderr
    (fresh,) = _ranks(multinode["root"] / "one" / "full", proc.stderr, world=1)
    (from2,) = _ranks(multinode["root"] / "one" / "from2", proc.stderr, world=1)
    assert from2["global_step"] == 12 and from2["world_size"] == 1
    assert not torch.equal(from2["rng_at_start"], fresh["rng_at_start"])


@pytest.mark.slow
def test_a_one_process_checkpoint_resumed_on_two_nodes_gives_each_rank_a_fresh_stream(multinode):
    """1 -> 2 processes: a warning; distinct per-rank streams that are not the fresh 2-node run's; ranks stay equal."""
    procs = multinode["launches"]["cyclegan"]
    output = _output(procs)
    assert [p.returncode for p in procs] == [0, 0], output
    assert REMAPPED.format(1, 2) in procs[0].stderr
    ranks = _ranks(multinode["root"] / "from1", output)
    fresh = _ranks(multinode["root"] / "gan" / "full", output)
    assert [r["global_step"] for r in ranks] == [12, 12]
    _assert_nodes_equal(ranks)
    streams = [r["rng_at_start"] for r in ranks + fresh]
    assert all(not torch.equal(a, b) for i, a in enumerate(streams) for b in streams[i + 1:])


ROOT = Path(__file__).resolve().parents[2]
SHORT_RUN = ["--trainer.max_steps=6", "--data.train_size=2048", "--trainer.enable_progress_bar=false"]


def _script_env(**extra: str) -> dict[str, str]:
    """The environment of an example launch script: the test's Python first on PATH (``lightning-gen``), one thread,
    a shipped toy recipe on the CPU."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "ACCELERATOR": "cpu",
            "CONFIG": str(ROOT / "configs" / "gan" / "toy_ring.yaml"), **extra}


@pytest.mark.slow
def test_the_torchrun_example_on_two_nodes_makes_one_wandb_run_and_one_checkpoint_folder(tmp_path):
    """examples/cluster/torchrun_fit.sh, run once per "node" (NODE_RANK 0 and 1) with a shipped recipe and the W&B
    logger (offline): the nodes agree on one run; only the global rank 0 creates it and writes checkpoints."""
    port = str(_free_port())
    args = [*SHORT_RUN, "--trainer.logger=lightning_gen.loggers.WandbLogger", "--trainer.logger.save_dir=runs",
            "--trainer.logger.project=multinode"]
    script = ["bash", str(ROOT / "examples" / "cluster" / "torchrun_fit.sh"), *args]
    results = _run_together([(script, _script_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(node),
                                                   NNODES="2", WANDB_MODE="offline")) for node in (0, 1)], tmp_path)
    output = _output(results)
    assert [p.returncode for p in results] == [0, 0], output
    assert "GLOBAL_RANK: 1" in results[1].stdout + results[1].stderr  # the second node really was global rank 1
    runs = sorted((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, output  # one W&B run for the job
    (folder,) = (tmp_path / "runs" / "multinode").iterdir()  # <project>/<run id>: the one run's folder
    assert runs[0].name.endswith(folder.name)
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["epoch=2-step=6.ckpt", "last.ckpt"]
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6


FAKE_SRUN = """#!/bin/bash
# srun as SLURM runs a job step: SLURM_NNODES x SLURM_NTASKS_PER_NODE tasks, each with its task variables
n=$((SLURM_NNODES * SLURM_NTASKS_PER_NODE)); pids=()
for ((i = 0; i < n; i++)); do
    SLURM_NTASKS=$n SLURM_PROCID=$i SLURM_LOCALID=$((i % SLURM_NTASKS_PER_NODE)) \
        SLURM_NODEID=$((i / SLURM_NTASKS_PER_NODE)) "$@" > "task$i.log" 2>&1 &
    pids+=($!)
done
rc=0; for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done; exit $rc
"""


@pytest.mark.slow
def test_the_slurm_example_runs_on_two_nodes_under_a_simulated_srun(tmp_path):
    """examples/cluster/slurm_fit.sbatch with SLURM's job variables and an ``srun`` that starts one task per node:
    Lightning's SLURM environment ranks the tasks, and global rank 0 writes the run's checkpoints."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "srun").chmod(0o755)
    env = _script_env(SLURM_NNODES="2", SLURM_NTASKS_PER_NODE="1", SLURM_JOB_ID="4242", SLURM_JOB_NAME="lg",
                      SLURM_NODELIST="localhost", MASTER_PORT=str(_free_port()), WANDB_MODE="disabled")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(["bash", str(ROOT / "examples" / "cluster" / "slurm_fit.sbatch"), *SHORT_RUN,
                           "--trainer.logger=false"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, start_new_session=True)
    logs = [(tmp_path / f"task{i}.log").read_text() for i in (0, 1)]
    assert proc.returncode == 0, proc.stderr[-2000:] + "\n".join(log[-3000:] for log in logs)
    for rank, log in enumerate(logs):
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in log
    (ckpt,) = (tmp_path / "runs" / "slurm-4242").rglob("last.ckpt")
    assert torch.load(ckpt, weights_only=False)["global_step"] == 6
