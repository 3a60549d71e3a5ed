"""The pretrained backbones: one entry each, shared by the weights and training steps.

An entry holds where its weights are published (URL, file name, published hash), the input
sizes it accepts, its pixel scaling and the layer the head is attached to by default (timm's
`default_cfgs`, scaled down). Adding a `keras.applications` backbone is one more entry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    """One `keras.applications` backbone, built with `include_top=False`."""

    keras_class: str  # keras.applications class name
    display_name: str
    default_input_size: int  # pixels (square)
    min_input_size: int  # smaller inputs are refused
    scale: float  # pixel scaling inside the model: x * scale + offset
    offset: float
    default_cut_layer: str  # backbone layer whose output feeds the head
    weights_url: str  # the publisher's no-top ImageNet weights
    weights_filename: str  # also the name in Keras' cache (~/.keras/models/<filename>)
    weights_md5: str = ""  # the published md5, where the publisher gives only that
    weights_sha256: str = ""  # the published sha256, where there is one


BACKBONES: dict[str, Backbone] = {
    # Keras publishes only an md5 (keras/src/applications/inception_v3.py, WEIGHTS_PATH_NO_TOP);
    # preprocess_input is x / 127.5 - 1.
    "inception_v3": Backbone(
        keras_class="InceptionV3",
        display_name="InceptionV3 transfer",
        default_input_size=150,
        min_input_size=75,
        scale=1 / 127.5,
        offset=-1.0,
        default_cut_layer="mixed7",
        weights_url="https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_filename="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_md5="bcbd6486424b2319ff4ef7d526e38f63",
    ),
    # keras/src/applications/resnet.py: BASE_WEIGHTS_PATH + the no-top file name, and
    # WEIGHTS_HASHES["resnet50v2"][1] (an md5); resnet_v2.preprocess_input is mode "tf",
    # x / 127.5 - 1. The default cut is the pre-activation stack's final output (post_relu,
    # what include_top=False returns); 112 px (224 scaled down as InceptionV3's 299 -> 150)
    # leaves a 4x4x2048 map, a head of about the size of InceptionV3's at mixed7.
    "resnet50_v2": Backbone(
        keras_class="ResNet50V2",
        display_name="ResNet50V2 transfer",
        default_input_size=112,
        min_input_size=32,
        scale=1 / 127.5,
        offset=-1.0,
        default_cut_layer="post_relu",
        weights_url="https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
        "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_filename="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_md5="fac2f116257151a9d068a22e544a4917",
    ),
}

DEFAULT_BACKBONE = "inception_v3"
