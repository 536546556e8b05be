"""Tests for lightning_gen/modules/stargan.py: the losses against hand computations, the step schedule, domains and
their errors, translation, data checks, learning on known transforms, and DDP."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import run_script
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_gen import StarGAN
from lightning_gen.nets import StarGANDiscriminator, StarGANGenerator

ROOT = Path(__file__).resolve().parents[2]
SIZE = 16
# the domains' known transforms of a source image: identity, colour inversion, horizontal flip
TRANSFORMS = (lambda x: x, lambda x: -x, lambda x: x.flip(-1))


def smooth_images(n: int, seed: int, size: int = SIZE) -> Tensor:
    """Random smooth grayscale images in [-1, 1]: 4x4 uniform noise upsampled bilinearly."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 1, 4, 4, generator=g) * 2 - 1, size=size, mode="bilinear", align_corners=False)


def bar_images(n: int, seed: int, size: int = SIZE) -> Tensor:
    """Dark smooth textures with a bright vertical bar near the left edge (random height): images whose inversion
    and flip change their distribution, so the domains can be told apart (plain noise would look the same)."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(n, 1, 4, 4, generator=g), size=size, mode="bilinear", align_corners=False)
    top = torch.randint(0, size // 2, (n, 1), generator=g)
    rows = torch.arange(size).view(1, -1)
    bar = torch.zeros(n, 1, size, size)
    bar[:, 0, :, 2:5] = ((rows >= top) & (rows < top + size // 2)).float().unsqueeze(-1)
    return (0.3 * base - 0.9) * (1 - bar) + 0.9 * bar


def attribute_transform(x: Tensor, attributes: Tensor) -> Tensor:
    """Multi-label truth: attribute 0 inverts, attribute 1 flips (each image by its own 0/1 attributes)."""
    inv = attributes[:, 0].view(-1, 1, 1, 1)
    x = x * (1 - 2 * inv)
    flip = attributes[:, 1].view(-1, 1, 1, 1)
    return flip * x.flip(-1) + (1 - flip) * x


class DomainImages(L.LightningDataModule):
    """Unpaired domain images: source image ``i`` appears only in its domain (``i % K``, single-label) or with its
    attributes (``i % 4`` in binary, multi-label), transformed by the known transform(s)."""

    def __init__(self, num_domains: int = 3, multi_label: bool = False, train_size: int = 240, batch_size: int = 16) -> None:
        super().__init__()
        self.multi_label = multi_label
        self.domain_names = ["invert", "flip"] if multi_label else ["identity", "invert", "flip"][:num_domains]
        self.image_shape = (1, SIZE, SIZE)
        self.batch_size = batch_size
        self.splits = {}
        for split, n, seed in (("train", train_size, 1), ("val", 48, 2)):
            x = bar_images(n, seed)
            if multi_label:
                codes = torch.arange(n) % 4
                domains = torch.stack([codes % 2, codes // 2], 1).float()
                images = attribute_transform(x, domains)
            else:
                domains = torch.arange(n) % num_domains
                images = torch.stack([TRANSFORMS[int(d)](xi) for xi, d in zip(x, domains)])
            self.splits[split] = (x, TensorDataset(images, domains))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["train"][1], batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"][1], batch_size=48)


def make_stargan(num_domains: int = 3, multi_label: bool = False, base: int = 8, **kwargs) -> StarGAN:
    torch.manual_seed(0)
    return StarGAN(StarGANGenerator(num_domains, 1, base, num_residual_blocks=1),
                   StarGANDiscriminator(num_domains, SIZE, 1, base, num_layers=3), multi_label=multi_label, **kwargs)


def quiet_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    base = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=str(tmp_path))
    return L.Trainer(**{**base, **kwargs})


def hand_gradient_penalty(model: StarGAN, x: Tensor, fake: Tensor, alpha: Tensor) -> Tensor:
    x_hat = (alpha * x + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(model.discriminator(x_hat)[0].sum(), x_hat)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


# -- the losses ------------------------------------------------------------------------------------------------------
def test_discriminator_loss_matches_a_hand_computation():
    model = make_stargan()
    x = smooth_images(6, 3)
    domains = torch.tensor([0, 1, 2, 2, 1, 0])
    fake = model.generator(x, model.domain_vectors(torch.tensor([1, 2, 0, 1, 0, 2]))).detach()
    torch.manual_seed(5)
    loss, parts = model.discriminator_loss(x, domains, fake)
    torch.manual_seed(5)
    alpha = torch.rand(6, 1, 1, 1)
    real_scores, real_logits = model.discriminator(x)
    fake_scores, _ = model.discriminator(fake)
    # eq. 5 with the WGAN-GP adversarial term (critic maximises E D(x) - E D(G)): lambda_cls = 1, lambda_gp = 10
    adv = -real_scores.mean() + fake_scores.mean()
    log_p = torch.log_softmax(real_logits, 1)
    cls = -log_p[torch.arange(6), domains].mean()
    gp = hand_gradient_penalty(model, x, fake, alpha)
    torch.testing.assert_close(parts["loss_dis_adv"], adv.detach())
    torch.testing.assert_close(parts["loss_dis_cls"], cls.detach())
    torch.testing.assert_close(parts["penalty"], gp.detach())
    torch.testing.assert_close(loss, adv + cls + 10 * gp)
    assert float(gp.detach()) > 0 and float(cls.detach()) > 0.5  # not degenerate: an untrained classifier is near log 3


def test_generator_loss_matches_a_hand_computation():
    model = make_stargan(classification_weight=2.0, reconstruction_weight=7.0)
    x = smooth_images(5, 4)
    domains, targets = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([2, 2, 1, 1, 0])
    loss, parts = model.generator_loss(x, domains, targets)
    one_hot = lambda d: F.one_hot(d, 3).float()  # noqa: E731
    fake = model.generator(x, one_hot(targets))
    scores, logits = model.discriminator(fake)
    adv = -scores.mean()
    cls = F.cross_entropy(logits, targets)
    rec = (x - model.generator(fake, one_hot(domains))).abs().mean()
    torch.testing.assert_close(parts["loss_gen_adv"], adv.detach())
    torch.testing.assert_close(parts["loss_gen_cls"], cls.detach())
    torch.testing.assert_close(parts["loss_gen_rec"], 7.0 * rec.detach())
    torch.testing.assert_close(loss, adv + 2.0 * cls + 7.0 * rec)


def test_multi_label_losses_use_summed_sigmoid_cross_entropy():
    model = make_stargan(num_domains=2, multi_label=True, gp_weight=0.0)
    x = smooth_images(4, 5)
    domains = torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    fake = model.generator(x, domains.flip(0)).detach()
    loss, parts = model.discriminator_loss(x, domains, fake)
    _, logits = model.discriminator(x)
    p = torch.sigmoid(logits)
    hand = -(domains * p.log() + (1 - domains) * (1 - p).log()).sum(1).mean()  # summed over attributes, batch mean
    torch.testing.assert_close(parts["loss_dis_cls"], hand.detach(), rtol=1e-5, atol=1e-6)
    assert "penalty" not in parts  # gp_weight 0 turns the penalty off
    torch.testing.assert_close(loss, parts["loss_dis_adv"] + parts["loss_dis_cls"])


# -- the schedule ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("accumulate", [1, 2])
def test_generator_steps_after_every_n_critic_discriminator_steps(tmp_path, monkeypatch, accumulate):
    model = make_stargan(base=4, n_critic=3, accumulate_grad_batches=accumulate)
    calls: list[tuple[int, str]] = []
    batch = {"idx": -1}
    original = model.player_backward

    def backward(name: str, loss: Tensor, check_finite: bool = True) -> None:
        calls.append((batch["idx"], name))
        original(name, loss, check_finite)

    step = model.training_step

    def training_step(data, batch_idx: int) -> None:
        batch["idx"] = batch_idx  # one epoch holds every batch of the run
        step(data, batch_idx)

    monkeypatch.setattr(model, "player_backward", backward)
    monkeypatch.setattr(model, "training_step", training_step)
    quiet_trainer(tmp_path, max_steps=2).fit(model, DomainImages(batch_size=8))
    batches = 2 * 3 * accumulate
    assert model.player_steps == {"discriminator": 6, "generator": 2}
    assert [i for i, n in calls if n == "discriminator"] == list(range(batches))
    # the generator backpropagates on the batches that feed every third discriminator step (the last `accumulate`)
    fed = [i for i, n in calls if n == "generator"]
    per_window = 3 * accumulate
    assert fed == [w * per_window + per_window - accumulate + j for w in range(2) for j in range(accumulate)]


# -- domains, translation and errors ---------------------------------------------------------------------------------
def test_domain_vectors_targets_and_translation_to_each_domain():
    model = make_stargan()
    domains = torch.tensor([2, 0, 1])
    torch.testing.assert_close(model.domain_vectors(domains), F.one_hot(domains, 3).float())
    assert torch.equal(model.domain_target(domains, 1), torch.tensor([1, 1, 1]))
    x = smooth_images(3, 6)
    each = model.translate_to_each_domain(x)
    assert each.shape == (3, 3, 1, SIZE, SIZE)
    for k in range(3):
        torch.testing.assert_close(each[:, k], model.translate(x, k), rtol=0, atol=0)
        torch.testing.assert_close(each[:, k], model.generator(x, F.one_hot(torch.full((3,), k), 3).float()).detach())
    torch.testing.assert_close(model.translate(x, torch.tensor([0, 1, 2])),
                               torch.stack([each[0, 0], each[1, 1], each[2, 2]]), rtol=0, atol=0)
    assert torch.equal(model.predict_step((x, domains), 0), each)


def test_multi_label_targets_flip_one_attribute():
    model = make_stargan(num_domains=2, multi_label=True)
    attributes = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    assert torch.equal(model.domain_target(attributes, 0), torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
    assert torch.equal(model.domain_target(attributes, 1), torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    assert torch.equal(attributes, torch.tensor([[0.0, 1.0], [1.0, 1.0]]))  # not modified in place
    x = smooth_images(2, 7)
    each = model.translate_to_each_domain(x, attributes)
    torch.testing.assert_close(each[:, 1], model.translate(x, torch.tensor([[0.0, 0.0], [1.0, 0.0]])), rtol=0, atol=0)
    torch.testing.assert_close(model.translate(x, torch.tensor([1.0, 0.0])),
                               model.translate(x, torch.tensor([[1.0, 0.0], [1.0, 0.0]])), rtol=0, atol=0)
    with pytest.raises(TypeError, match="own attributes"):
        model.translate_to_each_domain(x)
    with pytest.raises(TypeError, match="attributes"):
        model.translate(x, 1)


def test_clear_errors_for_wrong_domains_and_options():
    model = make_stargan()
    x = smooth_images(2, 8)
    with pytest.raises(ValueError, match=r"indices in \[0, 3\)"):
        model.translate(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="multi_label: true"):
        model.translate(x, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="0 or 1"):
        make_stargan(num_domains=2, multi_label=True).translate(x, torch.tensor([0.5, 1.0]))
    with pytest.raises(TypeError, match=r"\(images \(B, C, H, W\), domains\)"):
        model.training_step(torch.arange(4), 0)
    with pytest.raises(ValueError, match="num_domains"):
        StarGAN(StarGANGenerator(3, 1, 4), StarGANDiscriminator(4, SIZE, 1, 4, num_layers=3))
    with pytest.raises(ValueError, match="n_critic"):
        make_stargan(n_critic=0)
    with pytest.raises(ValueError, match="relativistic"):
        make_stargan(loss="relativistic")
    with pytest.raises(TypeError, match="domains=targets"):
        model.sample(2, a=x)


@pytest.mark.parametrize(
    "data, message",
    [(DomainImages(num_domains=2), "2 domains .identity, invert. but the nets have num_domains=3"),
     (DomainImages(multi_label=True), "multi-label but the model has multi_label: false")],
)
def test_setup_checks_the_data_modules_domains(tmp_path, data, message):
    with pytest.raises(ValueError, match=message):
        quiet_trainer(tmp_path, max_steps=1).fit(make_stargan(base=4), data)


def test_setup_checks_the_image_shape(tmp_path):
    model = StarGAN(StarGANGenerator(3, 3, 4), StarGANDiscriminator(3, SIZE, 3, 4, num_layers=3))
    with pytest.raises(ValueError, match="generator.*channels"):
        quiet_trainer(tmp_path, max_steps=1).fit(model, DomainImages())


# -- learning --------------------------------------------------------------------------------------------------------
def _l1_to_truth(model: StarGAN, data: DomainImages) -> float:
    """Mean L1 between each held-out image's translation to each domain and that domain's true transform."""
    sources, dataset = data.splits["val"]
    images, domains = dataset.tensors
    out = model.translate_to_each_domain(images, domains if data.multi_label else None)
    errors = []
    for k in range(model.num_domains):
        if data.multi_label:
            truth = attribute_transform(sources, model.domain_target(domains, k))
        else:
            truth = TRANSFORMS[k](sources)
        errors.append((out[:, k] - truth).abs().mean())
    return float(torch.stack(errors).mean())


@pytest.mark.parametrize("multi_label", [False, True])
def test_learns_known_transforms_from_unpaired_domains(tmp_path, multi_label):
    """Inversion and flips (single-label: three domains; multi-label: both attributes) from unpaired images: the
    translations approach the true transforms and the critic's classifier learns the domains."""
    data = DomainImages(num_domains=3, multi_label=multi_label, train_size=256, batch_size=16)
    # n_critic 1 and a 20x learning rate make the run short (200 generator steps, a few seconds)
    model = make_stargan(num_domains=2 if multi_label else 3, multi_label=multi_label, base=8, n_critic=1,
                         generator_optimizer=lambda p: torch.optim.Adam(p, 2e-3, betas=(0.5, 0.999)),
                         discriminator_optimizer=lambda p: torch.optim.Adam(p, 2e-3, betas=(0.5, 0.999)))
    before = _l1_to_truth(model, data)
    trainer = quiet_trainer(tmp_path, max_steps=200, limit_val_batches=1)
    trainer.fit(model, data)
    after = _l1_to_truth(model, data)
    metrics = trainer.validate(model, data, verbose=False)[0]
    # measured: L1 0.75 -> 0.18 (single-label), 0.77 -> 0.16 (multi-label); accuracies 1.0; reconstruction ~0.12
    assert before > 0.6 and after < 0.35 * before, (before, after)
    assert metrics["val/domain_accuracy_real"] > 0.95
    assert metrics["val/domain_accuracy_translated"] > 0.9
    assert 0.0 < metrics["val/reconstruction_l1"] < 0.2


# -- DDP -------------------------------------------------------------------------------------------------------------
def test_ddp_two_cpu_processes_keep_parameters_identical(tmp_path):
    proc = run_script(ROOT / "tests" / "scripts" / "ddp_stargan.py", str(tmp_path), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    init = torch.load(tmp_path / "init.pt", weights_only=True)
    for info in ranks:
        assert info["world_size"] == 2 and info["global_step"] == 3
        assert info["player_steps"] == {"discriminator": 6, "generator": 3}
    a, b = ranks[0]["state_dict"], ranks[1]["state_dict"]
    assert set(a) == set(init)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=f"{name} differs between ranks")
    for prefix in ("generator.", "discriminator."):  # both players trained
        assert max((a[k] - init[k]).abs().max().item() for k in init if k.startswith(prefix)) > 1e-4, prefix
