"""Plain ``torch.nn`` building blocks (no Lightning)."""

from lightning_gen.nets.mlp import MLPDiscriminator, MLPGenerator, make_activation, mlp

__all__ = ["MLPGenerator", "MLPDiscriminator", "make_activation", "mlp"]
