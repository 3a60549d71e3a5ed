"""Model builders: in-model preprocessing, the seed CNN, and backbone transfer models.

Every model takes raw uint8 images [batch, H, W, C] at the dataset's native size. Scaling,
resizing, grayscale-to-RGB (for pretrained backbones; the seed CNN learns from 1 or 3 channels
as they come) and augmentation are layers inside the model, so they run on the
accelerator and the exported model needs no separate preprocessing.

`MODELS` maps a name to its input sizes, scaling and default epochs: the seed CNN, plus one
entry per backbone of `components.common.backbones.BACKBONES` (timm's `default_cfgs`, scaled
down), so another `keras.applications` backbone is one entry there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from components.common.backbones import BACKBONES, DEFAULT_BACKBONE, Backbone
from components.common.config import ConfigError
from components.common.dataset import DataError

SEED_CNN = "seed_cnn"
TRANSFER_EPOCHS = 10  # default first-phase epochs of a transfer model (the head trains fast)


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model family."""

    display_name: str
    default_input_size: int  # pixels (square)
    min_input_size: int  # smaller inputs are refused
    scale: float  # pixel scaling inside the model: x * scale + offset
    offset: float
    rgb: bool  # True: needs three channels (grayscale is repeated); False: takes 1 or 3 as they are
    default_epochs: int  # first-phase epochs when none are given
    backbone: Backbone | None = None  # the pretrained backbone; None: built from scratch
    default_learning_rate: float = 1e-3  # first-phase learning rate when none is given
    # First-phase learning-rate schedule when none is given (see LR_SCHEDULES).
    default_schedule: str = "plateau"
    # Share of each training label spread evenly over all classes, when none is given.
    default_label_smoothing: float = 0.0
    # Random horizontal flips in training, predictions averaged over each image and its mirror
    # image (mirror_averaged), when not given.
    default_mirror: bool = False

    @property
    def is_transfer(self) -> bool:
        """Whether the model reuses a pretrained backbone."""
        return self.backbone is not None


def _transfer(backbone: Backbone) -> ModelSpec:
    return ModelSpec(
        display_name=backbone.display_name,
        default_input_size=backbone.default_input_size,
        min_input_size=backbone.min_input_size,
        scale=backbone.scale,
        offset=backbone.offset,
        rgb=True,
        default_epochs=TRANSFER_EPOCHS,
        backbone=backbone,
    )


# "plateau": constant, divided by 3 when val_loss stalls; "cosine": linear warmup over the first
# tenth of the phase's steps, then cosine decay to zero (a function of the step counter, which
# the checkpoint holds, so a resumed run follows the same curve).
LR_SCHEDULES = ("plateau", "cosine")

MODELS: dict[str, ModelSpec] = {
    # The seed CNN's recipe, chosen on the validation split (docs/BENCHMARKS.md, "Recipe"):
    # 40 px (Fashion-MNIST's 28 px upscaled) leaves the three 2x2-conv/pool blocks a 4x4 map
    # before Flatten (28 px leaves 2x2, and accuracy stalls near 0.90), at a third of 56 px's
    # cost; Adam 2e-3 with warmup and cosine decay over 20 epochs, label smoothing 0.1, random
    # horizontal flips with predictions averaged over each image and its mirror image (about
    # +0.005 on validation and test over the same recipe without). Longer (30 epochs), with
    # translate/zoom/rotate augmentation, at 48 px or with averaged weights, it ended no higher
    # on validation (bench/results/recipe/).
    SEED_CNN: ModelSpec(
        "CNN from scratch",
        40,
        16,
        1 / 255.0,
        0.0,
        rgb=False,
        default_epochs=20,
        default_learning_rate=2e-3,
        default_schedule="cosine",
        default_label_smoothing=0.1,
        default_mirror=True,
    ),
    **{name: _transfer(backbone) for name, backbone in BACKBONES.items()},
}


def preprocessing(
    spec: ModelSpec,
    image_shape: tuple[int, int, int],
    input_size: int,
    augmentation: float,
    seed: int,
    name: str = "preprocess",
    mirror: bool = False,
):
    """A Sequential-like functional block: uint8 native images -> scaled model inputs.

    In training only: `augmentation` > 0 shifts, zooms, rotates and flips; `mirror` flips.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=image_shape, dtype="uint8", name="image")
    x = layers.Rescaling(spec.scale, spec.offset, name="scale")(inputs)  # casts to float
    if tuple(image_shape[:2]) != (input_size, input_size):
        x = layers.Resizing(input_size, input_size, interpolation="bilinear", name="resize")(x)
    channels = image_shape[2]
    if channels not in (1, 3):
        raise DataError(f"{spec.display_name} takes 1 or 3 channels, dataset has {channels}")
    if spec.rgb and channels == 1:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    if augmentation > 0:
        x = augmentation_block(augmentation, seed)(x)
    elif mirror:
        x = layers.RandomFlip("horizontal", seed=seed + 3, name="mirror")(x)
    return keras.Model(inputs, x, name=name)


def mirror_averaged(model):
    """`model` whose prediction is the mean of its predictions on an image and its mirror image.

    Test-time augmentation for a model trained with random horizontal flips: the same weights
    (shared, not copied) and input; built from stock Keras layers and ops, so the saved model
    loads without this module.
    """
    import keras

    image = keras.Input(shape=model.input_shape[1:], dtype=model.input.dtype, name="image")
    mirrored = keras.ops.flip(image, axis=2)  # [batch, height, width, channels]
    mean = keras.layers.Average(name="mirror_mean")([model(image), model(mirrored)])
    return keras.Model(image, mean, name=f"{model.name}_mirror_averaged")


def augmentation_block(strength: float, seed: int):
    """Random translate, zoom, rotate and horizontal flip; active in training only."""
    import keras
    from keras import layers

    shift = min(0.1 * strength, 0.5)
    return keras.Sequential(
        [
            layers.RandomTranslation(shift, shift, fill_mode="nearest", seed=seed),
            layers.RandomZoom(shift, fill_mode="nearest", seed=seed + 1),
            layers.RandomRotation(min(0.04 * strength, 0.5), fill_mode="nearest", seed=seed + 2),
            layers.RandomFlip("horizontal", seed=seed + 3),
        ],
        name="augment",
    )


def classifier_head(num_classes: int, dense_units: int, dropout_rate: float):
    """Flatten, Dense relu, Dropout, Dense softmax (float32 output under mixed precision)."""
    from keras import layers

    return [
        layers.Flatten(name="flatten"),
        layers.Dense(dense_units, activation="relu", name="dense_hidden"),
        layers.Dropout(dropout_rate, name="dropout"),
        layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions"),
    ]


def build_seed_cnn(
    image_shape: tuple[int, int, int],
    num_classes: int,
    input_size: int,
    augmentation: float = 0.0,
    seed: int = 0,
    dense_units: int = 1024,
    dropout_rate: float = 0.2,
    mirror: bool = False,
):
    """The reference CNN: 3x (Conv2D 2x2 relu + MaxPool 2x2), Flatten, Dense 1024, Dropout."""
    import keras
    from keras import layers

    spec = MODELS[SEED_CNN]
    pre = preprocessing(spec, image_shape, input_size, augmentation, seed, mirror=mirror)
    x = pre.output
    for index, filters in enumerate((32, 32, 64)):
        x = layers.Conv2D(filters, 2, activation="relu", name=f"conv{index + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{index + 1}")(x)
    for layer in classifier_head(num_classes, dense_units, dropout_rate):
        x = layer(x)
    return keras.Model(pre.input, x, name="seed_cnn")


@dataclass
class TransferModel:
    """The full model plus its parts; `head` and `full` share the head's layers.

    Pretrained: the backbone is frozen and always runs in inference mode. From scratch (no
    weights): every layer trains, BatchNorm included, and BatchNorm follows Keras' `training`
    flag (batch statistics in fit, moving statistics in evaluation, prediction and export).
    """

    full: Any  # raw uint8 images -> class probabilities (what is trained end to end and exported)
    features: Any  # raw uint8 images -> backbone features (no augmentation)
    head: Any  # backbone features -> class probabilities
    backbone: Any  # the cut backbone (frozen when pretrained)
    scratch: bool = False  # built without pretrained weights: trained end to end


def load_backbone(spec: ModelSpec, input_size: int, weights: str | None, cut_layer: str):
    """The backbone with `include_top=False`, weights loaded, cut at `cut_layer`."""
    import keras

    name = spec.backbone.keras_class
    factory: Callable = getattr(keras.applications, name)
    shape = (input_size, input_size, 3)
    base = factory(include_top=False, weights=None, input_shape=shape)
    if weights is not None:
        load_backbone_weights(base, weights, spec)
    try:
        cut = base.get_layer(cut_layer)
    except ValueError:
        raise ConfigError(f"cut_layer: {name} has no layer {cut_layer!r} to cut at") from None
    return keras.Model(base.input, cut.output, name=f"{name.lower()}_to_{cut_layer}")


def load_backbone_weights(base, weights: str, spec: ModelSpec) -> None:
    """Load a weights file into the backbone; a file that does not fit is a clear error."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a failed load warns once per layer first
            base.load_weights(weights)
    except (ValueError, KeyError, OSError, TypeError) as error:
        detail = " ".join(str(error).split())[:400]
        raise DataError(
            f"{weights}: weights do not fit {spec.backbone.keras_class} (include_top=False): "
            f"{detail}"
        ) from None


def build_transfer(
    image_shape: tuple[int, int, int],
    num_classes: int,
    input_size: int,
    weights: str | None,
    cut_layer: str = "",
    augmentation: float = 0.0,
    seed: int = 0,
    dense_units: int = 1024,
    dropout_rate: float = 0.2,
    model: str = DEFAULT_BACKBONE,
    scratch: bool = False,
    mirror: bool = False,
) -> TransferModel:
    """Backbone cut at `cut_layer` (empty: its default) with a dense head.

    Default: the backbone is frozen and called with training=False (the Keras
    transfer-learning recipe), with `weights` loaded (None: random, for benchmarks and tests).
    `scratch` (no weights): the same architecture from random initialisation, every layer
    trainable (BatchNorm included), trained end to end; its BatchNorm moving statistics are
    re-estimated for inference (components.training.batchnorm).
    """
    import keras

    spec = MODELS[model]
    cut_layer = cut_layer or spec.backbone.default_cut_layer
    if scratch and weights is not None:
        raise ConfigError("a backbone trained from scratch takes no pretrained weights")
    backbone = load_backbone(spec, input_size, weights, cut_layer)
    backbone.trainable = scratch
    # Frozen: inference mode always. From scratch: BatchNorm follows the `training` flag.
    mode = {} if scratch else {"training": False}
    head_input = keras.Input(shape=backbone.output.shape[1:], name="features")
    x = head_input
    for layer in classifier_head(num_classes, dense_units, dropout_rate):
        x = layer(x)
    head = keras.Model(head_input, x, name="head")

    plain = preprocessing(spec, image_shape, input_size, 0.0, seed, name="preprocess")
    feature_model = keras.Model(
        plain.input, backbone(plain.output, **mode), name="feature_extractor"
    )
    pre = preprocessing(spec, image_shape, input_size, augmentation, seed, mirror=mirror)
    outputs = head(backbone(pre.output, **mode))
    name = f"{model}_scratch" if scratch else f"{model}_transfer"
    full = keras.Model(pre.input, outputs, name=name)
    return TransferModel(
        full=full, features=feature_model, head=head, backbone=backbone, scratch=scratch
    )


def unfreeze_from(backbone, first_layer: str) -> int:
    """Make backbone layers from `first_layer` on trainable (BatchNorm stays frozen)."""
    from keras import layers

    names = [layer.name for layer in backbone.layers]
    if first_layer not in names:
        raise ConfigError(f"fine_tune_from: the backbone has no layer {first_layer!r}")
    backbone.trainable = True
    start = names.index(first_layer)
    for index, layer in enumerate(backbone.layers):
        frozen = index < start or isinstance(layer, layers.BatchNormalization)
        layer.trainable = not frozen
    return sum(int(layer.count_params()) for layer in backbone.layers if layer.trainable)


WARMUP_SHARE = 0.1  # the cosine schedule's linear warmup, as a share of the phase's steps


SPARSE_CROSSENTROPY = "sparse_categorical_crossentropy"


def classification_loss(label_smoothing: float, num_classes: int):
    """Sparse categorical cross-entropy, against labels smoothed by `label_smoothing`.

    Smoothing trains against (1 - s) on the true class plus s / classes on every class (Keras'
    `CategoricalCrossentropy(label_smoothing=s)` on one-hot labels; the pipeline's labels stay
    integers). 0: the plain loss, by name.
    """
    if not label_smoothing:
        return SPARSE_CROSSENTROPY
    import keras
    from keras import ops

    def smoothed_sparse_crossentropy(y_true, y_pred):
        target = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), num_classes)
        target = target * (1.0 - label_smoothing) + label_smoothing / num_classes
        return keras.losses.categorical_crossentropy(target, y_pred)

    return smoothed_sparse_crossentropy


def learning_rate(schedule: str, peak: float, total_steps: int, warmup_share: float = WARMUP_SHARE):
    """The optimizer's learning rate: `peak` (plateau), or warmup + cosine decay over the phase.

    The cosine schedule is a function of the optimizer's step counter only, so a run resumed
    from a checkpoint (which holds the counter) continues on the same curve.
    """
    if schedule != "cosine":
        return peak
    import keras

    warmup = int(warmup_share * total_steps)
    return keras.optimizers.schedules.CosineDecay(
        0.0, max(1, total_steps - warmup), alpha=0.0, warmup_target=peak, warmup_steps=warmup
    )
