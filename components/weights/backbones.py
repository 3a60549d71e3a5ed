"""Published pretrained weights per backbone: one entry per backbone, name -> file and hash."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedWeights:
    """Where a backbone's pretrained weights are published, and the hash the publisher gives."""

    url: str  # the publisher's download URL
    filename: str  # file name, also the name in Keras' cache (~/.keras/models/<filename>)
    md5: str | None = None  # the published md5, where the publisher gives only that
    sha256: str | None = None  # the published sha256, where there is one


BACKBONES: dict[str, PublishedWeights] = {
    # keras.applications.InceptionV3(include_top=False, weights="imagenet"): Keras publishes
    # only an md5 (keras/src/applications/inception_v3.py, WEIGHTS_PATH_NO_TOP).
    "inception_v3": PublishedWeights(
        url="https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        filename="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        md5="bcbd6486424b2319ff4ef7d526e38f63",
    ),
}

DEFAULT_BACKBONE = "inception_v3"
DEFAULT_URL = BACKBONES[DEFAULT_BACKBONE].url
