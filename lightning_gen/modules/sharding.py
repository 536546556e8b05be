"""Sharded data parallelism (FSDP2 ``fully_shard``) for the single-objective families, under Lightning's
``ModelParallelStrategy``.

The module's sharding units are sharded over the data-parallel ranks with ``torch.distributed.fsdp.fully_shard``: by
default each net of the module that holds parameters, and an EMA's averaged copy the same way, so that its shards
line up with the live net's and the average is updated shard by shard, without gathering. Every parameter outside
the units (a VAE's learned output variance; a flow's ActNorm, 1x1 convolutions and coupling scales) stays whole on
every rank, and its gradient is averaged across ranks before each step.

A sharded unit gathers its parameters when it is *called*, on every rank together, so a unit must be used only
through its ``forward``. That holds for the nets of the autoencoders, VAE, DDPM (guided too) and score models. A
flow also runs its layers through ``inverse`` and initializes ActNorm by writing parameters, so RealNVP shards only
the coupling layers' conditioner nets (called through ``forward`` both ways, and most of the flow's parameters).
The RBM reads its weights outside any forward and is refused; the adversarial games average each player's gradients
themselves and are refused too (``docs/scaling.md`` has the design that would shard them).
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lightning_gen.nets.ema import ExponentialMovingAverage

__all__ = ["average_replicated_gradients", "clip_mixed_gradients_", "data_parallel_mesh", "shard_nets"]


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


def shard_nets(module: nn.Module, mesh: "dist.device_mesh.DeviceMesh",
               units: Optional[list[nn.Module]] = None) -> list[nn.Parameter]:
    """``fully_shard`` each of ``units`` (default: every child net of ``module`` that holds parameters, an EMA's
    averaged copy alike); return the parameters left outside them, which stay whole on every rank."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    if units is None:
        children = [c.module if isinstance(c, ExponentialMovingAverage) else c for c in module.children()]
        units = [net for net in children if next(net.parameters(), None) is not None]
    for unit in units:
        fully_shard(unit, mesh=mesh)
    return [p for p in module.parameters() if not isinstance(p, DTensor)]


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


def clip_mixed_gradients_(params: Iterable[nn.Parameter], clip_val: float, algorithm: str = "norm") -> Tensor:
    """Clip gradients of which some are sharded (DTensor) and some whole (the same on every rank) as one set of whole
    gradients would be: by value elementwise, or by their global norm (the shards' squares summed over the ranks, the
    whole ones' counted once); returns that norm (``torch.nn.utils.clip_grad_norm_`` cannot mix the two kinds)."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    local = [g.to_local() if isinstance(g, DTensor) else g for g in grads]
    if not local:
        return torch.zeros(())
    if algorithm == "value":
        for g in local:
            g.clamp_(-clip_val, clip_val)
        return torch.zeros((), device=local[0].device)
    if algorithm != "norm":
        raise ValueError(f"gradient_clip_algorithm must be 'norm' or 'value', got {algorithm!r}")
    squares = [torch.linalg.vector_norm(g.float()) ** 2 for g in local]
    sharded = torch.stack([sq for sq, g in zip(squares, grads) if isinstance(g, DTensor)] or [squares[0] * 0]).sum()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(sharded)  # every rank's shards
    whole = torch.stack([sq for sq, g in zip(squares, grads) if not isinstance(g, DTensor)] or [squares[0] * 0]).sum()
    total = (sharded + whole).sqrt()
    scale = (clip_val / (total + 1e-6)).clamp(max=1.0)
    for g in local:
        g.mul_(scale.to(g.dtype))
    return total
