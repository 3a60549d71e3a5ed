"""BatchNorm statistics of a backbone trained from scratch, re-estimated for inference.

Keras keeps BatchNorm's moving mean and variance as an exponential average (momentum 0.99) of
the batch statistics seen in training. A short run takes too few steps for that average to
forget its initial values (mean 0, variance 1) and to follow the weights as they change, so the
model scores chance in inference mode (shared FIELD-NOTES: InceptionV3 from scratch).

Instead, at every epoch's end, before validation, and so also for the weights that are
evaluated, exported and checkpointed, the statistics are re-estimated for the weights as they
are: one pass over the first `SAMPLE_IMAGES` training images (data prep shuffles the split),
without augmentation, in training-mode statistics, at the training batch size; each layer's
moving mean and variance become the population mean and variance of its inputs over the pass
(PreciseBN, Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021). The pass is a pure
function of the weights and the data, so a run resumed from a checkpoint ends with the same
statistics as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from components.common.logging import get_logger

log = get_logger("training")

SAMPLE_IMAGES = 1024  # training images of the re-estimation pass (fewer when the split is smaller)


def batchnorm_layers(model) -> list:
    """Every BatchNormalization layer of `model`, nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(batchnorm_layers(layer))
    return found


class Reestimator:
    """Re-estimates the moving statistics of `features`' BatchNorm layers from image batches.

    `features` maps raw images to backbone features without augmentation; its BatchNorm layers
    must follow the `training` flag (a from-scratch backbone).
    """

    def __init__(self, features):
        self.features = features
        self.layers = batchnorm_layers(features)
        self._forward: Any = None

    def _pass(self, images):
        if self._forward is None:
            import tensorflow as tf

            # Traced once, while every momentum is 0: each call leaves the batch's statistics
            # in the moving mean and variance.
            self._forward = tf.function(lambda x: self.features(x, training=True))
        self._forward(images)

    def __call__(self, batches) -> int:
        """Set each layer's moving mean and variance to its inputs' over `batches`; images seen."""
        momenta = [layer.momentum for layer in self.layers]
        sums = [None] * len(self.layers)  # per layer: [sum n*mean, sum n*(var + mean^2)]
        count = 0
        try:
            for layer in self.layers:
                layer.momentum = 0.0
            for images, _ in batches:
                n = int(images.shape[0])
                self._pass(images)
                for index, layer in enumerate(self.layers):
                    mean = np.asarray(layer.moving_mean, np.float64)
                    second = np.asarray(layer.moving_variance, np.float64) + mean**2
                    if sums[index] is None:
                        sums[index] = [n * mean, n * second]
                    else:
                        sums[index][0] += n * mean
                        sums[index][1] += n * second
                count += n
        finally:
            for layer, momentum in zip(self.layers, momenta, strict=True):
                layer.momentum = momentum
        if count:
            for layer, (first, second) in zip(self.layers, sums, strict=True):
                mean = first / count
                layer.moving_mean.assign(mean.astype(np.float32))
                variance = np.maximum(second / count - mean**2, 0.0)
                layer.moving_variance.assign(variance.astype(np.float32))
        return count


class ReestimateBatchNorm(keras.callbacks.Callback):
    """Re-estimate the BatchNorm statistics before each validation, so at each epoch's end.

    Validation, early stopping's best weights, checkpoints and the final model all see moving
    statistics that fit their weights. `sample()` returns the batches of the pass.
    """

    def __init__(self, reestimator: Reestimator, sample):
        super().__init__()
        self.reestimator = reestimator
        self.sample = sample

    def on_test_begin(self, logs=None):
        """The epoch's training steps are over: fit the statistics to the weights."""
        images = self.reestimator(self.sample())
        log.info("batchnorm_reestimated", layers=len(self.reestimator.layers), images=images)
