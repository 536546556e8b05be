"""Tests for lightning_gen/modules/shapes.py: nets that do not fit the data stop in ``setup``, before any metric
set-up or training, with the nets' own option names."""

from __future__ import annotations

from typing import Optional

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen import GAN, VAE
from lightning_gen.callbacks import GenerativeMetricsCallback
from lightning_gen.data import ToyGaussiansDataModule
from lightning_gen.modules.shapes import generator_output_problem, input_problem, shape_settings
from lightning_gen.nets import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDecoder,
    MLPDiscriminator,
    MLPEncoder,
    MLPGenerator,
)


class Digits(L.LightningDataModule):
    """Random ``(1, 28, 28)`` images that declare their ``image_shape``, as the image data modules do."""

    def __init__(self, declare: bool = True) -> None:
        super().__init__()
        if declare:
            self.image_shape = (1, 28, 28)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.rand(16, 1, 28, 28) * 2 - 1), batch_size=8)


class Spy(GenerativeMetricsCallback):
    """Records the stages at which the callback built its feature extractor (it builds nothing here)."""

    def __init__(self) -> None:
        super().__init__(extractor=torch.nn.Flatten(), metrics=["fid"], num_samples=4, cache_dir=False)
        self.prepared: list[str] = []
        self.started: list[str] = []

    def _prepare_extractor(self, trainer):
        self.prepared.append(trainer.state.fn)
        return super()._prepare_extractor(trainer)

    def on_fit_start(self, trainer, pl_module) -> None:
        self.started.append("fit")
        super().on_fit_start(trainer, pl_module)


def fit(model: L.LightningModule, data: L.LightningDataModule, tmp_path, callbacks=()) -> None:
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=list(callbacks))
    trainer.fit(model, data)


def dcgan(g_size: int = 28, g_channels: int = 1, d_size: int = 28, d_channels: int = 1) -> GAN:
    return GAN(DCGANGenerator(latent_dim=8, image_size=g_size, channels=g_channels, base_channels=4),
               DCGANDiscriminator(image_size=d_size, channels=d_channels, base_channels=4))


def test_a_32px_generator_on_28px_data_stops_in_setup_naming_image_size(tmp_path):
    spy = Spy()
    with pytest.raises(ValueError) as err:
        fit(dcgan(g_size=32), Digits(), tmp_path, [spy])
    message = str(err.value)
    assert message == (
        "The generator (DCGANGenerator) makes samples of shape (1, 32, 32) but the data (Digits) has shape "
        "(1, 28, 28): set image_size: 28 in `model.init_args.generator.init_args` (DCGANGenerator), e.g. "
        "`--model.generator.init_args.image_size 28`."
    )
    assert "output_shape" not in message
    assert spy.started == [] and spy.prepared == []  # before any metric set-up (the classifier would train there)


def test_wrong_channels_in_both_nets_are_reported_together(tmp_path):
    with pytest.raises(ValueError) as err:
        fit(dcgan(g_channels=3, d_channels=3), Digits(), tmp_path)
    message = str(err.value)
    assert "set channels: 1 in `model.init_args.generator.init_args`" in message
    assert "`--model.generator.init_args.channels 1`" in message
    assert "The discriminator (DCGANDiscriminator) cannot take the data (Digits) of shape (1, 28, 28)" in message
    assert "`--model.discriminator.init_args.channels 1`" in message
    assert "image_size" not in message  # the sizes match: only the channels are named


def test_a_discriminator_for_another_size_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"discriminator.*--model\.discriminator\.init_args\.image_size 28`"):
        fit(dcgan(d_size=32), Digits(), tmp_path)


def test_mlp_nets_are_told_their_output_shape(tmp_path):
    data = ToyGaussiansDataModule(mixture="ring", train_size=64, val_size=32, batch_size=32)
    model = GAN(MLPGenerator(2, 3, (8,)), MLPDiscriminator(2, (8,)))
    with pytest.raises(ValueError, match=r"makes samples of shape \(3,\).*has shape \(2,\): set output_shape: 2 .*"
                                         r"--model\.generator\.init_args\.output_shape 2`"):
        fit(model, data, tmp_path)


def test_vae_decoder_and_encoder_are_checked_in_setup(tmp_path):
    model = VAE(MLPEncoder((1, 32, 32), 4, (8,)), MLPDecoder(2, (1, 32, 32), (8,)))
    with pytest.raises(ValueError) as err:
        fit(model, Digits(), tmp_path)
    message = str(err.value)
    assert message.startswith("The encoder (MLPEncoder) cannot take the data (Digits) of shape (1, 28, 28)")
    assert "set input_shape: [1, 28, 28]" in message
    assert "The decoder (MLPDecoder) makes samples of shape (1, 32, 32)" in message
    assert "`--model.decoder.init_args.output_shape [1,28,28]`" in message


def test_matching_nets_train_and_undeclared_data_is_checked_at_the_first_batch(tmp_path):
    fit(dcgan(), Digits(), tmp_path)  # no error
    with pytest.raises(ValueError, match=r"set image_size: 28 in `model\.init_args\.generator\.init_args`"):
        fit(dcgan(g_size=32, d_size=32), Digits(declare=False), tmp_path)


def test_the_checks_leave_the_global_rng_and_batchnorm_statistics_alone():
    generator = DCGANGenerator(latent_dim=8, image_size=28, channels=1, base_channels=4)
    stats = {k: v.clone() for k, v in generator.state_dict().items() if "running" in k}
    rng = torch.get_rng_state()
    assert generator_output_problem(generator, generator, 8, (1, 28, 28), "Digits") is None
    assert input_problem(generator, generator, (1, 28, 28), "Digits", "generator") is not None  # takes noise
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in generator.state_dict().items():
        if "running" in k:
            torch.testing.assert_close(v, stats[k], rtol=0, atol=0)
    assert generator.training


@pytest.mark.parametrize(
    "net, current, expected",
    [
        (DCGANGenerator(latent_dim=4, image_size=32, channels=3, base_channels=4), (3, 32, 32),
         {"image_size": 28, "channels": 1}),
        (DCGANGenerator(latent_dim=4, image_size=28, channels=3, base_channels=4), (3, 28, 28), {"channels": 1}),
        (MLPGenerator(2, 3), None, {"output_shape": [1, 28, 28]}),
        (torch.nn.Linear(2, 2), None, {}),
    ],
)
def test_shape_settings_use_each_nets_own_option_names(net, current: Optional[tuple], expected):
    assert shape_settings(net, (1, 28, 28), current) == expected
