"""The training step: one input pipeline, one fit loop, one evaluation, for every model."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.common import storage
from components.common.config import ConfigError
from components.common.dataset import DataError, Manifest, load_manifest
from components.common.digest import json_digest
from components.common.logging import get_logger, step
from components.training import batchnorm, checkpoint, data, device, evaluate, features, outputs
from components.training.callbacks import (
    EpochRecorder,
    EpochSeeds,
    NaNGuard,
    StopAtAccuracy,
    empty_history,
)
from components.training.config import TrainConfig, TrainResult
from components.training.models import (
    SPARSE_CROSSENTROPY,
    build_seed_cnn,
    build_transfer,
    classification_loss,
    learning_rate,
    mirror_averaged,
    unfreeze_from,
)
from components.training.resources import make_optimizer, resolve_weights, scratch

log = get_logger("training")

# Images per forward pass outside training (feature extraction, test predictions): bounds the
# memory of the upscaled activations without changing any result.
INFERENCE_BATCH = 64


@dataclass
class Context:
    """What the phases of one run share."""

    config: TrainConfig
    manifest: Manifest
    runtime: device.Runtime
    cache: Path
    preemption: checkpoint.Preemption
    history: dict = field(default_factory=empty_history)
    resumed: bool = False
    feature_seconds: float = 0.0
    weights_sha256: str | None = None


def build(config: TrainConfig, manifest: Manifest, weights: str | None):
    """The model for the config: a Keras model (seed_cnn) or a TransferModel."""
    common = {
        "image_shape": manifest.image_shape,
        "num_classes": manifest.num_classes,
        "input_size": config.resolved_input_size,
        "augmentation": config.augmentation,
        "seed": config.seed,
        "dense_units": config.dense_units,
        "dropout_rate": config.dropout_rate,
        "mirror": config.resolved_mirror,
    }
    if not config.spec.is_transfer:
        return build_seed_cnn(**common)
    built = build_transfer(
        **common,
        weights=weights,
        cut_layer=config.resolved_cut_layer,
        model=config.model,
        scratch=config.from_scratch,
    )
    if config.fine_tune_from and config.from_scratch:
        # The pipeline passes one set of backbone settings to every backbone arm; a backbone
        # trained from scratch already trains every layer, so there is nothing to unfreeze.
        log.info("fine_tune_ignored", reason="from scratch: every layer trains in phase one")
        return built
    layers = {layer.name for layer in built.backbone.layers}
    if config.fine_tune_from and config.fine_tune_from not in layers:
        # Checked now, not after the head phase has spent its time.
        raise ConfigError(
            f"fine_tune_from: the backbone cut at {config.resolved_cut_layer} has no layer "
            f"{config.fine_tune_from!r}"
        )
    return built


def compile_model(
    model,
    config: TrainConfig,
    num_classes: int,
    total_steps: int,
    schedule: str | None = None,
    lr: float | None = None,
    jit_compile: bool | str = False,
) -> None:
    """Compile `model` with the config's recipe: optimizer, learning rate over `total_steps`, loss.

    `schedule` and `lr` default to the config's (a fine-tuning phase passes its own). The benches
    compile through this too, so their references train with the step's recipe by construction.
    """
    schedule = schedule or config.resolved_schedule
    lr = config.resolved_learning_rate if lr is None else lr
    model.compile(
        optimizer=make_optimizer(config.optimizer, learning_rate(schedule, lr, total_steps)),
        loss=classification_loss(config.resolved_label_smoothing, num_classes),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


@dataclass(frozen=True)
class PhaseData:
    """One phase's data: training batches for any epoch range, and the validation batches."""

    train: Callable[[int, int], Any]  # (first epoch, end epoch) -> per-epoch shuffled batches
    steps: int  # batches per epoch
    validation: Any = None


def phase_schedule(ctx: Context, phase: str) -> str:
    """The phase's learning-rate schedule: the config's for the first phase, else plateau."""
    return ctx.config.resolved_schedule if phase == "head" else "plateau"


def phase_callbacks(ctx: Context, phase: str, lr: float, flags: checkpoint.RunFlags, before=()):
    """The callbacks of one phase; the resumable ones by name (their state is checkpointed).

    `before` go ahead of the epoch recorder: their work at validation's start counts as training
    time.
    """
    config = ctx.config
    offset = sum(1 for p in ctx.history["phase"] if p != phase)
    recorder = EpochRecorder(ctx.history, phase, ctx.manifest.splits["train"].count, offset)
    nan_guard = NaNGuard(flags)
    callbacks: list[Any] = [EpochSeeds(config.seed), *before, recorder, nan_guard]
    if config.target_accuracy:
        callbacks.append(StopAtAccuracy(config.target_accuracy))
    resumables: dict[str, checkpoint.Resumable] = {}
    if config.lr_decay_patience and phase_schedule(ctx, phase) == "plateau":
        resumables["reduce_lr"] = checkpoint.ResumableReduceLROnPlateau(
            monitor="val_loss", factor=1 / 3, patience=config.lr_decay_patience, min_lr=lr / 100
        )
    patience = config.patience_for(phase_schedule(ctx, phase))
    if patience:
        resumables["early_stopping"] = checkpoint.ResumableEarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True
        )
    return [*callbacks, *resumables.values()], resumables, nan_guard


def fit_phase(
    ctx: Context, model, phase: str, batches: PhaseData, epochs: int, lr: float, before=()
) -> None:
    """Compile and fit one phase with every callback; resume it exactly from its checkpoint."""
    config = ctx.config
    compile_model(
        model,
        config,
        ctx.manifest.num_classes,
        epochs * batches.steps,
        schedule=phase_schedule(ctx, phase),
        lr=lr,
        jit_compile=ctx.runtime.jit_compile,
    )
    flags = checkpoint.RunFlags()
    callbacks, resumables, nan_guard = phase_callbacks(ctx, phase, lr, flags, before)
    backup, first, end = None, 0, epochs
    if config.checkpoint_dir:
        backup = checkpoint.StoreCheckpoint(
            storage.join(config.checkpoint_dir, phase),
            ctx.cache / "checkpoints" / json_digest(config.checkpoint_dir)[:12] / phase,
            history=ctx.history,
            extra={
                "model": config.model,
                "num_classes": ctx.manifest.num_classes,
                "input_size": config.resolved_input_size,
                "dataset_version": ctx.manifest.version,
                # A frozen random backbone's checkpoint (before scratch training) does not fit.
                **({"arm": "scratch"} if config.from_scratch else {}),
            },
            flags=flags,
            resumables=resumables,
            min_interval=config.checkpoint_interval,
            # Fine-tuning keeps most of the backbone frozen: rebuilt from its weights file.
            lean=phase == "fine_tune",
        )
        backup.set_model(model)
        restored = backup.restore()
        if restored is not None:
            ctx.resumed = True
            if restored.done:
                # A finished phase is restored, not retrained: a kill after training (before or
                # after the outputs were written) costs no epoch.
                log.info("phase_already_done", phase=phase, epochs=restored.epoch)
                return
            first = restored.epoch
            # Stopped early at that epoch: fit runs no epoch, but still ends the phase (early
            # stopping restores its best weights; the checkpoint is marked done).
            end = first if restored.stopped else epochs
        callbacks.append(backup)
    callbacks.append(checkpoint.PreemptionGuard(ctx.preemption, flags, backup))
    model.fit(
        batches.train(first, end),
        validation_data=batches.validation,
        initial_epoch=first,
        epochs=end,
        steps_per_epoch=batches.steps,
        callbacks=callbacks,
        verbose=0,
    )
    nan_guard.check(lr)


def phase_done(ctx: Context, phase: str) -> bool:
    """Whether the checkpoint marks `phase` as finished."""
    if not ctx.config.checkpoint_dir:
        return False
    pointer_uri = storage.join(ctx.config.checkpoint_dir, phase, checkpoint.LATEST)
    if not storage.exists(pointer_uri):
        return False
    return bool(json.loads(storage.read_text(pointer_uri)).get("done"))


def image_batches(ctx: Context, splits: dict) -> PhaseData:
    """Decoded images (cached within the RAM budget), shuffled per epoch for training."""
    config = ctx.config
    train_images = splits["train"]

    def train(first: int, end: int):
        return data.per_epoch(
            train_images,
            config.batch_size,
            seed=config.seed,
            shuffle_buffer=config.shuffle_buffer,
            first=first,
            end=end,
        )

    count = ctx.manifest.splits["train"].count
    return PhaseData(
        train,
        data.steps(count, config.batch_size),
        data.batched(splits["validation"], config.batch_size),
    )


def _extract_all(ctx: Context, built, splits: dict, folder: Path) -> dict:
    """Run the backbone over train and validation (or reuse the local folder's features)."""
    inference_batch = min(ctx.config.batch_size, INFERENCE_BATCH)
    return {
        split: features.extract(
            built.features,
            data.batched(splits[split], inference_batch),
            folder,
            split,
            ctx.config.feature_dtype,
            ctx.preemption,
        )
        for split in features.SPLITS
    }


def _stored_features(ctx: Context, built, splits: dict) -> tuple[dict, Path]:
    """Features of a pretrained backbone: from the store, else computed once and published."""
    config = ctx.config
    facts = {
        "dataset_version": ctx.manifest.version,
        "model": config.model,
        "weights_sha256": ctx.weights_sha256,
        "cut_layer": config.resolved_cut_layer,
        "input_size": config.resolved_input_size,
        "dtype": config.feature_dtype,
    }
    uri = features.store_uri(
        config.feature_store,
        **{key: value for key, value in facts.items() if key != "model"},
    )
    folder = ctx.cache / "features" / features.cache_key(**facts)
    local = {split: features.cached(folder, split) for split in features.SPLITS}
    if all(local.values()):
        log.info("features_cache_hit", folder=str(folder))
        return local, folder
    fetched = features.fetch(uri, folder, facts, ctx.manifest.num_classes)
    if fetched is not None:
        log.info("features_store_hit", uri=uri)
        return fetched, folder
    files = _extract_all(ctx, built, splits, folder)
    if features.publish(folder, files, uri, facts):
        log.info("features_published", uri=uri)
    else:
        log.info("features_published_concurrently", uri=uri)
    return files, folder


def feature_batches(ctx: Context, built, splits: dict) -> PhaseData:
    """Run the frozen backbone once over train and validation; batches of its features.

    With `feature_store` and pretrained weights the features are shared through the store
    (features.py); otherwise they live in the local cache folder only.
    """
    config = ctx.config
    started = time.perf_counter()
    if config.feature_store and ctx.weights_sha256:
        files, folder = _stored_features(ctx, built, splits)
    else:
        facts = {
            "dataset": ctx.manifest.version,
            "model": config.model,
            "weights": ctx.weights_sha256,
            "input_size": config.resolved_input_size,
            "cut": config.resolved_cut_layer,
            "dtype": config.feature_dtype,
            "seed": config.seed,
        }
        folder = ctx.cache / "features" / features.cache_key(**facts)
        files = _extract_all(ctx, built, splits, folder)
    ctx.feature_seconds = time.perf_counter() - started
    log.info("features_ready", seconds=round(ctx.feature_seconds, 3), folder=str(folder))

    def train(first: int, end: int):
        return features.feature_epochs(
            files["train"], config.batch_size, seed=config.seed, first=first, end=end
        )

    return PhaseData(
        train,
        data.steps(len(files["train"].labels), config.batch_size),
        features.feature_dataset(files["validation"], config.batch_size),
    )


def batchnorm_refresh(ctx: Context, built, splits: dict) -> batchnorm.ReestimateBatchNorm:
    """The callback fitting a from-scratch backbone's BatchNorm statistics to its weights."""
    sample = splits["train"].take(batchnorm.SAMPLE_IMAGES)
    batch_size = ctx.config.batch_size  # the training batches' size: their normalisation
    return batchnorm.ReestimateBatchNorm(
        batchnorm.Reestimator(built.features), lambda: data.batched(sample, batch_size)
    )


def train(ctx: Context, built, splits: dict) -> Any:
    """Run the head phase (on cached features when possible), then optional fine-tuning.

    A backbone model without weights trains end to end from scratch, in one phase.
    """
    config = ctx.config
    epochs, lr = config.resolved_epochs, config.resolved_learning_rate
    if not config.spec.is_transfer:
        fit_phase(ctx, built, "head", image_batches(ctx, splits), epochs, lr)
        return built
    if built.scratch:
        # Every layer trains on the images; BatchNorm statistics re-estimated at each epoch's end.
        refresh = [batchnorm_refresh(ctx, built, splits)]
        fit_phase(ctx, built.full, "head", image_batches(ctx, splits), epochs, lr, refresh)
        return built.full
    # Cached features are of the images as they are: random flips or augmentation need images.
    on_features = config.feature_cache and config.augmentation == 0 and not config.resolved_mirror
    if on_features and phase_done(ctx, "head"):
        # Resuming after the head phase: its weights are in the checkpoint, no features needed.
        nothing = PhaseData(lambda first, end: None, 0)
        fit_phase(ctx, built.head, "head", nothing, epochs, lr)
    elif on_features:
        fit_phase(ctx, built.head, "head", feature_batches(ctx, built, splits), epochs, lr)
    else:
        fit_phase(ctx, built.full, "head", image_batches(ctx, splits), epochs, lr)
    if config.fine_tunes:
        trainable = unfreeze_from(built.backbone, config.fine_tune_from)
        log.info("fine_tune_start", first_layer=config.fine_tune_from, backbone_trainable=trainable)
        fit_phase(
            ctx,
            built.full,
            "fine_tune",
            image_batches(ctx, splits),
            config.fine_tune_epochs,
            config.fine_tune_learning_rate,
        )
    return built.full


def _load(config: TrainConfig) -> Manifest:
    manifest = load_manifest(config.dataset_uri)
    data.check_labels(manifest, config.dataset_uri)
    if config.num_classes and config.num_classes != manifest.num_classes:
        raise DataError(
            f"{config.dataset_uri}: the dataset has {manifest.num_classes} classes but the "
            f"model was configured for {config.num_classes}"
        )
    return manifest


def _train(ctx: Context, splits: dict, weights: str | None):
    """Build and train the model, SIGTERM turned into a checkpoint and an exit."""
    ctx.preemption.install()
    try:
        # Compile (the optimizer's variables) as well as build inside the scope: with
        # several GPUs every variable must be created under MirroredStrategy.
        with ctx.runtime.strategy.scope():
            model = train(ctx, build(ctx.config, ctx.manifest, weights), splits)
            plain = {
                "optimizer": getattr(model, "optimizer", None),
                "loss": SPARSE_CROSSENTROPY,
                "metrics": ["accuracy"],
                "jit_compile": ctx.runtime.jit_compile,
            }
            if ctx.config.resolved_mirror:
                # Evaluated and exported as trained: on each image and its mirror image. The
                # trained model (weights shared) hands its optimizer over, so model.keras holds
                # the optimizer and its state once, at the top level, where loading restores it.
                trained, model = model, mirror_averaged(model)
                trained.compiled, trained.optimizer = False, None
            if ctx.config.resolved_label_smoothing or ctx.config.resolved_mirror:
                # The exported model.keras records the plain loss, so it loads in any Keras
                # without this module; the optimizer and its state are kept. A transfer model
                # whose head trained on cached features was never compiled itself.
                model.compile(**plain)
            return model
    finally:
        ctx.preemption.uninstall()


def run(config: TrainConfig) -> TrainResult:
    """Train, evaluate on the test split, and write every output into `config.output_dir`."""
    with step(log, f"train_{config.model}", dataset=config.dataset_uri) as figures:
        # The allocator setting was measured for the seed CNN only (docs/steps.md, "Memory").
        runtime = device.setup(keep_memory=not config.spec.is_transfer)
        device.seed_everything(config.seed)
        manifest = _load(config)
        with scratch(config.cache_dir) as cache:
            splits = data.load_splits(
                config.dataset_uri, manifest, cache, config.cache_ram_mb << 20
            )
            weights, weights_sha = resolve_weights(config.weights_uri or None, cache)
            preemption = checkpoint.Preemption()
            ctx = Context(config, manifest, runtime, cache, preemption, weights_sha256=weights_sha)
            model = _train(ctx, splits, weights)
            test_ds = data.batched(splits["test"], min(config.batch_size, INFERENCE_BATCH))
            scores = evaluate.scores(*evaluate.predict(model, test_ds), manifest.class_names)
        record = outputs.record(
            config,
            manifest,
            ctx.history,
            model,
            scores,
            weights_sha256=ctx.weights_sha256,
            feature_seconds=ctx.feature_seconds,
            resumed=ctx.resumed,
        )
        outputs.write_all(
            config.output_dir,
            model=model,
            image_shape=manifest.image_shape,
            metrics=record,
            history=ctx.history,
            misclassified=scores.misclassified,
            config=config.to_dict(),
        )
        figures.update(
            test_accuracy=round(scores.accuracy, 4),
            epochs_run=record.epochs_run,
            images_per_second=record.images_per_second,
            output_dir=str(config.output_dir),
        )
    return TrainResult(
        output_dir=str(config.output_dir),
        model=config.model,
        test_accuracy=scores.accuracy,
        test_loss=scores.loss,
        epochs_run=record.epochs_run,
        pretrained=record.pretrained,
        resumed=ctx.resumed,
        metrics=record.to_dict(),
    )
