"""Plain ``torch.nn`` building blocks (no Lightning)."""

from lightning_gen.nets.bigan import JointConvDiscriminator, JointMLPDiscriminator
from lightning_gen.nets.autoencoder import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from lightning_gen.nets.classifier import ImageClassifier, load_classifier, save_classifier
from lightning_gen.nets.image_pool import ImagePool
from lightning_gen.nets.image_to_image import (
    PatchGANDiscriminator,
    ResnetGenerator,
    UNetGenerator,
    patchgan_receptive_field,
)
from lightning_gen.nets.flows import (
    COUPLINGS,
    AffineCoupling,
    CouplingResNet,
    ImageRealNVP,
    SplineCoupling,
    VectorRealNVP,
    channel_mask,
    checkerboard_mask,
    half_mask,
    squeeze2d,
    unsqueeze2d,
)
from lightning_gen.nets.splines import rational_quadratic_spline, spline_parameter_count
from lightning_gen.nets.dcgan import DCGAN_IMAGE_SIZES, DCGANDiscriminator, DCGANGenerator
from lightning_gen.nets.infogan import DCGANInfoGANDiscriminator, InfoGANOutput, MLPInfoGANDiscriminator
from lightning_gen.nets.layers import (
    ConditionalBatchNorm2d,
    MinibatchStdDev,
    init_dcgan_weights_,
    maybe_spectral_norm,
    one_hot,
)
from lightning_gen.nets.mlp import MLPDiscriminator, MLPGenerator, make_activation, mlp
from lightning_gen.nets.rbm import (
    BernoulliRBM,
    LogPartitionEstimate,
    ais_betas,
    ais_log_partition,
    base_visible_bias,
    binary_states,
    exact_log_partition,
)
from lightning_gen.nets.unet import MLPDenoiser, UNet, timestep_embedding
from lightning_gen.nets.sngan import SNGAN_IMAGE_SIZES, SNGANDiscriminator, SNGANGenerator
from lightning_gen.nets.super_resolution import (
    PixelShuffleUpsample,
    SRGANDiscriminator,
    SRResidualBlock,
    SRResNetGenerator,
    bicubic_downsample,
    bicubic_upsample,
)
from lightning_gen.nets.stargan import (
    StarGANDiscriminator,
    StarGANGenerator,
    StarGANOutput,
    StarGANResidualBlock,
    tile_domains,
)
from lightning_gen.nets.vgg import VGG19Features, VGGWeightsNotFoundError

__all__ = [
    "StarGANGenerator",
    "StarGANDiscriminator",
    "StarGANOutput",
    "StarGANResidualBlock",
    "tile_domains",
    "ResnetGenerator",
    "UNetGenerator",
    "PatchGANDiscriminator",
    "patchgan_receptive_field",
    "ImagePool",
    "AffineCoupling",
    "SplineCoupling",
    "COUPLINGS",
    "rational_quadratic_spline",
    "spline_parameter_count",
    "CouplingResNet",
    "VectorRealNVP",
    "ImageRealNVP",
    "checkerboard_mask",
    "channel_mask",
    "half_mask",
    "squeeze2d",
    "unsqueeze2d",
    "MLPEncoder",
    "MLPDecoder",
    "ConvEncoder",
    "ConvDecoder",
    "MLPGenerator",
    "MLPDiscriminator",
    "JointMLPDiscriminator",
    "JointConvDiscriminator",
    "make_activation",
    "mlp",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "DCGAN_IMAGE_SIZES",
    "MLPInfoGANDiscriminator",
    "DCGANInfoGANDiscriminator",
    "InfoGANOutput",
    "SNGANGenerator",
    "SNGANDiscriminator",
    "SNGAN_IMAGE_SIZES",
    "ImageClassifier",
    "save_classifier",
    "load_classifier",
    "MinibatchStdDev",
    "ConditionalBatchNorm2d",
    "init_dcgan_weights_",
    "maybe_spectral_norm",
    "one_hot",
    "UNet",
    "MLPDenoiser",
    "timestep_embedding",
    "SRResNetGenerator",
    "SRGANDiscriminator",
    "SRResidualBlock",
    "PixelShuffleUpsample",
    "bicubic_downsample",
    "bicubic_upsample",
    "VGG19Features",
    "VGGWeightsNotFoundError",
    "BernoulliRBM",
    "LogPartitionEstimate",
    "ais_betas",
    "ais_log_partition",
    "base_visible_bias",
    "binary_states",
    "exact_log_partition",
]
