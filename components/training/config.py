"""The training step's settings and its result."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; validated at start-up and written next to the outputs as config.json."""

    dataset_uri: str = ""  # dataset folder (gs:// or local) holding manifest.json and shards
    output_dir: str = "outputs/training"  # LOCAL folder for model, metrics and history
    model: str = "seed_cnn"  # a key of models.MODELS: seed_cnn or inception_v3
    weights: str | None = None  # backbone weights file (store URI or path); None: random init
    input_size: int | None = None  # square side in pixels to resize to; None or 0: the default
    epochs: int = 30  # upper bound for the first phase; early stopping usually ends sooner
    batch_size: int = 128  # images per step
    optimizer: str = "adam"  # adam, adamw, sgd (with Nesterov momentum 0.9) or rmsprop
    learning_rate: float = 1e-3  # first-phase learning rate
    augmentation: float = 0.0  # strength of random translate/zoom/rotate/flip; 0 = off
    cut_layer: str = "mixed7"  # backbone layer whose output feeds the head
    fine_tune_from: str | None = None  # backbone layer from which to unfreeze in phase two
    fine_tune_epochs: int = 0  # epochs of phase two (0 = no fine-tuning)
    fine_tune_learning_rate: float = 1e-5  # phase-two learning rate
    seed: int = 42  # seeds Python, NumPy, TensorFlow, shuffling and augmentation
    checkpoint_dir: str | None = None  # store URI or folder for resume; None = no resume
    checkpoint_interval: float = 0.0  # seconds between checkpoint uploads (0: every epoch)
    cache_dir: str | None = None  # local scratch: shards, weights, features; None: a temp dir
    patience: int = 4  # early stopping: epochs without val_loss improvement
    lr_decay_patience: int = 2  # epochs without val_loss improvement before the LR drops 3x; 0 off
    target_accuracy: float | None = None  # stop once training accuracy reaches this; None = off
    feature_cache: bool = True  # frozen backbone and no augmentation: train the head on features
    feature_dtype: str = "float16"  # dtype of cached features on disk (float16 or float32)
    num_classes: int | None = None  # expected class count; None: take the dataset's
    shuffle_buffer: int = 10_000  # images in the shuffle buffer (also capped at 512 MiB)
    cache_ram_mb: int = 2048  # decoded splits cached in RAM up to this total; the rest on disk
    dropout_rate: float = 0.2  # dropout before the classifier, as in the reference recipe
    dense_units: int = 1024  # width of the hidden Dense layer of the head

    def __post_init__(self) -> None:
        """Validate at start-up."""
        from components.training.models import MODELS  # light: no TensorFlow at import

        if not self.dataset_uri:
            raise ValueError("dataset_uri is required")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose from {sorted(MODELS)}")
        spec = MODELS[self.model]
        if self.input_size is not None and self.input_size < 0:
            raise ValueError(
                f"input_size must be positive (0 or None: default), got {self.input_size}"
            )
        if self.input_size and self.input_size < spec.min_input_size:
            raise ValueError(
                f"input_size {self.input_size} is below {self.model}'s minimum of "
                f"{spec.min_input_size} pixels"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from {OPTIMIZERS}")
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "fine_tune_learning_rate": self.fine_tune_learning_rate,
            "shuffle_buffer": self.shuffle_buffer,
            "dense_units": self.dense_units,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.cache_ram_mb < 0:
            raise ValueError(f"cache_ram_mb must be >= 0, got {self.cache_ram_mb}")
        if self.checkpoint_interval < 0:
            raise ValueError(f"checkpoint_interval must be >= 0, got {self.checkpoint_interval}")
        if self.augmentation < 0:
            raise ValueError(f"augmentation must be >= 0, got {self.augmentation}")
        if self.fine_tune_epochs < 0 or self.patience < 0 or self.lr_decay_patience < 0:
            raise ValueError("fine_tune_epochs, patience and lr_decay_patience must be >= 0")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if self.feature_dtype not in ("float16", "float32"):
            raise ValueError(f"feature_dtype must be float16 or float32, got {self.feature_dtype}")
        if self.fine_tune_epochs and not self.fine_tune_from:
            raise ValueError("fine_tune_epochs needs fine_tune_from (the first layer to unfreeze)")
        if self.fine_tune_from and not spec.is_transfer:
            raise ValueError(f"{self.model} has no backbone to fine-tune")
        if self.weights and not spec.is_transfer:
            raise ValueError(f"{self.model} takes no pretrained weights")
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")

    @property
    def resolved_input_size(self) -> int:
        """The input size the model resizes to."""
        from components.training.models import MODELS

        return self.input_size or MODELS[self.model].default_input_size

    @property
    def fine_tunes(self) -> bool:
        """Whether a second, fine-tuning phase runs."""
        return bool(self.fine_tune_from and self.fine_tune_epochs)

    def to_dict(self) -> dict:
        """The resolved config as plain JSON values."""
        values = dataclasses.asdict(self)
        values["input_size"] = self.resolved_input_size
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
