"""Tests for lightning_gen/modules/adversarial.py: players, accumulation and clipping for every game, counters."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from torch import nn

from lightning_gen import AdversarialModule, CycleGAN, Pix2Pix

from .test_image_to_image import InversionDataModule
from .test_image_to_image import make_cyclegan as _make_cyclegan
from .test_image_to_image import make_pix2pix as _make_pix2pix


class AppliedStepNorms(L.Callback):
    """For SGD: the norm of the gradient each optimizer step applied, ``||theta_before - theta_after|| / lr``, and
    the number of training batches."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.batches = 0

    def on_train_start(self, trainer, pl_module) -> None:
        for opt in trainer.optimizers:
            params = [p for g in opt.param_groups for p in g["params"]]
            state: dict = {}

            def pre(o, a, k, params=params, state=state):
                state["before"] = [p.detach().clone() for p in params]

            def post(o, a, k, params=params, state=state):
                delta = torch.cat([(b - p.detach()).flatten() for b, p in zip(state["before"], params)])
                self.norms.append(float(delta.norm()) / o.param_groups[0]["lr"])

            opt.register_step_pre_hook(pre)
            opt.register_step_post_hook(post)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1


GAMES = {
    "pix2pix": lambda **kw: _make_pix2pix(**kw),
    "cyclegan": lambda **kw: _make_cyclegan(pool_size=4, **kw),
}


@pytest.mark.parametrize("game", list(GAMES))
def test_image_to_image_games_accumulate_and_clip(game, tiny_trainer_kwargs):
    """Pix2Pix and CycleGAN got accumulation and clipping from the base: 2 batches per step, every SGD step applies a
    gradient of norm exactly ``gradient_clip_val`` (the raw gradients are far larger)."""
    L.seed_everything(0)
    model: Pix2Pix | CycleGAN = GAMES[game](accumulate_grad_batches=2, gradient_clip_val=1e-3)
    sgd = partial(torch.optim.SGD, lr=1e-2)
    model.players["generator"].optimizer = sgd
    model.players["discriminator"].optimizer = sgd
    rec = AppliedStepNorms()
    trainer = L.Trainer(max_steps=3, limit_val_batches=0, callbacks=[rec], **tiny_trainer_kwargs)
    trainer.fit(model, InversionDataModule(batch_size=4))
    assert rec.batches == 6 and trainer.global_step == 3
    assert model.player_steps == {"generator": 3, "discriminator": 3}
    assert len(rec.norms) == 6
    assert max(rec.norms) <= 1e-3 * (1 + 1e-3) and min(rec.norms) >= 1e-3 * (1 - 1e-3)


class _TwoNets(AdversarialModule):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)


def test_players_are_checked_when_registered():
    game = _TwoNets()
    game.add_player("a", [game.a], torch.optim.SGD, counts_global_step=True)
    with pytest.raises(ValueError, match="already has a player named 'a'"):
        game.add_player("a", [game.b], torch.optim.SGD)
    with pytest.raises(ValueError, match="only one player's steps can count"):
        game.add_player("b", [game.b], torch.optim.SGD, counts_global_step=True)
    with pytest.raises(ValueError, match="needs at least one net"):
        game.add_player("c", [], torch.optim.SGD)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"accumulate_grad_batches": 0}, "accumulate_grad_batches must be >= 1"),
    ({"gradient_clip_val": -1.0}, "gradient_clip_val must be positive"),
    ({"gradient_clip_algorithm": "l2"}, "gradient_clip_algorithm must be 'norm' or 'value'"),
])
def test_plumbing_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdversarialModule(**kwargs)


def test_frozen_turns_off_gradients_of_the_named_players_only_and_restores_them():
    game = _TwoNets()
    game.add_player("a", [game.a], torch.optim.SGD)
    game.add_player("b", [game.b], torch.optim.SGD)
    game.b.bias.requires_grad_(False)  # a flag set by the user survives freezing
    with game.frozen("a"):
        assert not any(p.requires_grad for p in game.a.parameters())
        assert game.b.weight.requires_grad
    assert all(p.requires_grad for p in game.a.parameters())
    assert not game.b.bias.requires_grad
