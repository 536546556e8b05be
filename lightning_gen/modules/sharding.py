"""Sharded data parallelism (FSDP2 ``fully_shard``) for the single-objective families, under Lightning's
``ModelParallelStrategy``.

Each net of the module that holds parameters is sharded over the data-parallel ranks with
``torch.distributed.fsdp.fully_shard``, and an EMA's averaged copy the same way, so that its shards line up with the
live net's and the average is updated shard by shard, without gathering. Parameters held by the module itself (a
VAE's learned output variance) stay whole on every rank; their gradients are averaged across ranks before each step.

A sharded net gathers its parameters when it is *called*, on every rank together: a family qualifies when its nets
run only through their ``forward`` (autoencoders, VAE, DDPM and guided DDPM, score models). RealNVP's flows also run
their layers through ``inverse`` and initialize ActNorm from data by writing to parameters that a sharded layer holds
only as a gathered copy, so flows are refused; the adversarial games average each player's gradients themselves and
are refused too (``docs/scaling.md`` has the design that would shard them).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

from lightning_gen.nets.ema import ExponentialMovingAverage

__all__ = ["data_parallel_mesh", "shard_nets", "average_replicated_gradients"]


def data_parallel_mesh(mesh: "dist.device_mesh.DeviceMesh", owner: str) -> "dist.device_mesh.DeviceMesh":
    """The data-parallel dimension of ``ModelParallelStrategy``'s mesh; a tensor-parallel size above 1 is refused.

    ``ModelParallelStrategy``'s defaults make the processes of a node tensor-parallel (``tensor_parallel_size``: the
    devices per node) and give them the same batches; these families do no tensor parallelism, so all processes must
    be data-parallel, each reading its own shard of the data."""
    names = mesh.mesh_dim_names or ()
    tensor_parallel = mesh["tensor_parallel"].size() if "tensor_parallel" in names else 1
    if tensor_parallel > 1:
        raise NotImplementedError(
            f"{owner} shards its nets over data-parallel ranks only, but the strategy makes {tensor_parallel} "
            "processes tensor-parallel (ModelParallelStrategy's default: the devices of a node), which would feed "
            "them the same batches. Make every process data-parallel: `ModelParallelStrategy(data_parallel_size="
            "<devices x nodes>, tensor_parallel_size=1)`, in YAML `strategy: {class_path: lightning.pytorch."
            "strategies.ModelParallelStrategy, init_args: {data_parallel_size: N, tensor_parallel_size: 1}}`."
        )
    return mesh["data_parallel"] if "data_parallel" in names else mesh


def shard_nets(module: nn.Module, mesh: "dist.device_mesh.DeviceMesh") -> list[nn.Parameter]:
    """``fully_shard`` every child net of ``module`` that holds parameters (an EMA's averaged copy alike); return
    the parameters ``module`` holds itself, which stay whole on every rank."""
    from torch.distributed.fsdp import fully_shard

    for child in module.children():
        net = child.module if isinstance(child, ExponentialMovingAverage) else child
        if next(net.parameters(), None) is not None:
            fully_shard(net, mesh=mesh)
    return list(module.parameters(recurse=False))


def average_replicated_gradients(params: list[nn.Parameter], group: Optional[object] = None) -> None:
    """Average the gradients of parameters kept whole on every rank (one all-reduce for all of them)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or not dist.is_initialized() or dist.get_world_size(group) == 1:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)
    flat /= dist.get_world_size(group)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
