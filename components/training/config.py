"""The training step's settings and its result: every parameter defined once, here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from components.common.config import ConfigError, option
from components.training.models import LR_SCHEDULES, MODELS, ModelSpec

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
FEATURE_DTYPES = ("float16", "float32")
MIRROR = ("", "on", "off")
DEFAULT_PATIENCE = 4  # early stopping's, in a phase on the plateau schedule


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; validated at start-up and written next to the outputs as config.json."""

    dataset_uri: str = option(
        "", "dataset folder (gs:// or local) with manifest.json and shards", aliases=("--dataset",)
    )
    output_dir: str = option("outputs/training", "LOCAL folder for model, metrics and history")
    model: str = option("seed_cnn", "model to train", choices=(*MODELS,))
    weights_uri: str = option(
        "",
        "backbone weights file (store URI or path); empty: the backbone trains from scratch",
        aliases=("--weights",),
    )
    scratch: bool = option(
        False,
        "train a backbone model from random initialisation, every layer (the scratch arm); "
        "also the case whenever weights_uri is empty",
    )
    input_size: int = option(0, "square side in pixels to resize to; 0: the model's default")
    epochs: int = option(0, "first-phase epochs at most; 0: the model's default")
    batch_size: int = option(128, "images per step")
    optimizer: str = option(
        "adam", "adam, adamw, sgd (Nesterov 0.9) or rmsprop", choices=OPTIMIZERS
    )
    learning_rate: float = option(0.0, "first-phase learning rate; 0: the model's default")
    lr_schedule: str = option(
        "",
        "first-phase learning-rate schedule: plateau (drop 3x when val_loss stalls) or cosine "
        "(linear warmup over the first tenth, then cosine decay); empty: the model's default",
        choices=("", *LR_SCHEDULES),
    )
    label_smoothing: float = option(
        -1.0,
        "share of each training label spread over all classes (0: off); negative: the "
        "model's default",
    )
    augmentation: float = option(0.0, "strength of random translate/zoom/rotate/flip; 0: off")
    mirror: str = option(
        "",
        "on: random horizontal flips in training, and predictions averaged over each image and "
        "its mirror image (test figures, exported model); off: neither; empty: the model's "
        "default (on for seed_cnn). Off for data whose mirror image is another class or none",
        choices=MIRROR,
    )
    cut_layer: str = option("", "backbone layer whose output feeds the head; empty: its default")
    fine_tune_from: str = option(
        "", "backbone layer from which to unfreeze; empty: no phase two; ignored from scratch"
    )
    fine_tune_epochs: int = option(0, "epochs of phase two (0: no fine-tuning)")
    fine_tune_learning_rate: float = option(1e-5, "phase-two learning rate")
    seed: int = option(42, "seeds Python, NumPy, TensorFlow, shuffling and augmentation")
    checkpoint_dir: str = option("", "store URI or folder for resume; empty: no resume")
    checkpoint_interval: float = option(
        0.0, "seconds between checkpoint uploads; 0: every epoch (SIGTERM uploads the newest)"
    )
    feature_store: str = option(
        "", "store URI or folder sharing pretrained-backbone features across runs; empty: none"
    )
    cache_dir: str = option("", "local scratch: shards, weights, features; empty: a temp dir")
    patience: int = option(
        -1,
        "early stopping: epochs without val_loss improvement; 0: off; negative: 4 in a phase "
        "on the plateau schedule, off on the cosine schedule (its length is the schedule's)",
    )
    lr_decay_patience: int = option(2, "epochs without improvement before the LR drops 3x; 0: off")
    target_accuracy: float = option(0.0, "stop once training accuracy reaches this; 0: off")
    feature_cache: bool = option(True, "train the head on backbone features computed per image")
    feature_dtype: str = option("float16", "dtype of cached features", choices=FEATURE_DTYPES)
    num_classes: int = option(0, "expected class count; 0: the dataset's")
    shuffle_buffer: int = option(10_000, "images in the shuffle buffer (also capped at 512 MiB)")
    cache_ram_mb: int = option(
        2048, "decoded splits cached in RAM up to this total (MiB); the rest on disk"
    )
    dropout_rate: float = option(0.2, "dropout before the classifier, as in the reference recipe")
    dense_units: int = option(1024, "width of the hidden Dense layer of the head")

    def __post_init__(self) -> None:
        """Validate at start-up."""
        if not self.dataset_uri:
            raise ConfigError("dataset_uri is required")
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose from {sorted(MODELS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose from {OPTIMIZERS}")
        if self.lr_schedule not in ("", *LR_SCHEDULES):
            raise ConfigError(
                f"unknown lr_schedule {self.lr_schedule!r}; choose from {LR_SCHEDULES}"
            )
        if self.mirror not in MIRROR:
            raise ConfigError(f"mirror must be on, off or empty (the model's default), got "
                              f"{self.mirror!r}")  # fmt: skip
        if self.feature_dtype not in FEATURE_DTYPES:
            raise ConfigError(f"feature_dtype must be one of {FEATURE_DTYPES}")
        self._check_sizes()
        self._check_ranges()
        self._check_model_options()

    def _check_sizes(self) -> None:
        if self.input_size < 0:
            raise ConfigError(f"input_size must be positive (0: default), got {self.input_size}")
        if self.input_size and self.input_size < self.spec.min_input_size:
            raise ConfigError(
                f"input_size {self.input_size} is below {self.model}'s minimum of "
                f"{self.spec.min_input_size} pixels"
            )
        positive = ("batch_size", "fine_tune_learning_rate", "shuffle_buffer")
        for name in (*positive, "dense_units"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")

    def _check_ranges(self) -> None:
        at_least_zero = ("epochs", "augmentation", "fine_tune_epochs", "num_classes")
        at_least_zero += ("learning_rate",)
        at_least_zero += ("checkpoint_interval", "cache_ram_mb")
        for name in (*at_least_zero, "lr_decay_patience"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.label_smoothing < 1.0:
            raise ConfigError(
                f"label_smoothing must be below 1 (negative: default), got {self.label_smoothing}"
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if not 0.0 <= self.target_accuracy <= 1.0:
            raise ConfigError(f"target_accuracy must be in [0, 1], got {self.target_accuracy}")
        if self.num_classes == 1:
            raise ConfigError("num_classes must be at least 2 (0: the dataset's)")

    def _check_model_options(self) -> None:
        if self.fine_tune_epochs and not self.fine_tune_from:
            raise ConfigError("fine_tune_epochs needs fine_tune_from (the first layer to unfreeze)")
        if self.fine_tune_from and not self.spec.is_transfer:
            raise ConfigError(f"{self.model} has no backbone to fine-tune")
        if self.weights_uri and not self.spec.is_transfer:
            raise ConfigError(f"{self.model} takes no pretrained weights")
        if self.scratch and not self.spec.is_transfer:
            raise ConfigError(f"scratch trains a backbone model; {self.model} has no backbone")
        if self.scratch and self.weights_uri:
            raise ConfigError("scratch trains from random initialisation: leave weights_uri empty")

    @property
    def spec(self) -> ModelSpec:
        """The model's entry in MODELS."""
        return MODELS[self.model]

    @property
    def resolved_input_size(self) -> int:
        """The input size the model resizes to."""
        return self.input_size or self.spec.default_input_size

    @property
    def resolved_epochs(self) -> int:
        """The first phase's epoch bound."""
        return self.epochs or self.spec.default_epochs

    @property
    def resolved_learning_rate(self) -> float:
        """The first phase's (peak) learning rate."""
        return self.learning_rate or self.spec.default_learning_rate

    @property
    def resolved_schedule(self) -> str:
        """The first phase's learning-rate schedule."""
        return self.lr_schedule or self.spec.default_schedule

    @property
    def resolved_label_smoothing(self) -> float:
        """The label smoothing of every phase."""
        if self.label_smoothing < 0:
            return self.spec.default_label_smoothing
        return self.label_smoothing

    @property
    def resolved_mirror(self) -> bool:
        """Whether training flips images and predictions average each image with its mirror."""
        return self.mirror == "on" if self.mirror else self.spec.default_mirror

    def patience_for(self, schedule: str) -> int:
        """Early stopping's patience in a phase on `schedule` (0: no early stopping).

        A cosine schedule decays to zero over a fixed length, and its last epochs, at the
        smallest rates, are where it gains most: stopping on a mid-schedule plateau of val_loss
        would restore a model from before the decay. So by default it runs to its end.
        """
        if self.patience >= 0:
            return self.patience
        return 0 if schedule == "cosine" else DEFAULT_PATIENCE

    @property
    def resolved_cut_layer(self) -> str:
        """The backbone layer the head is attached to ("" for a model without a backbone)."""
        if self.spec.backbone is None:
            return self.cut_layer
        return self.cut_layer or self.spec.backbone.default_cut_layer

    @property
    def from_scratch(self) -> bool:
        """Whether a backbone model trains from random initialisation (no weights), end to end."""
        return self.spec.is_transfer and not self.weights_uri

    @property
    def fine_tunes(self) -> bool:
        """Whether a second, fine-tuning phase runs (never from scratch: all layers train)."""
        return bool(self.fine_tune_from and self.fine_tune_epochs) and not self.from_scratch

    def to_dict(self) -> dict:
        """The resolved config as plain JSON values."""
        values = dataclasses.asdict(self)
        values["input_size"] = self.resolved_input_size
        values["epochs"] = self.resolved_epochs
        values["learning_rate"] = self.resolved_learning_rate
        values["lr_schedule"] = self.resolved_schedule
        values["label_smoothing"] = self.resolved_label_smoothing
        values["mirror"] = "on" if self.resolved_mirror else "off"
        values["patience"] = self.patience_for(self.resolved_schedule)  # the first phase's
        values["cut_layer"] = self.resolved_cut_layer
        values["scratch"] = self.from_scratch
        return values


@dataclass(frozen=True)
class TrainResult:
    """Where the outputs went and the key figures."""

    output_dir: str
    model: str
    test_accuracy: float
    test_loss: float
    epochs_run: int
    pretrained: bool
    resumed: bool
    metrics: dict
