"""KFP component for the weights step: URL + hash -> verified, content-addressed weights file."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Model, Output

from components.common.images import DEFAULT_CPU_IMAGE


def weights(
    weights: Output[Model],
    store: str,
    weights_url: str = "default",
    sha256: str = "",
    md5: str = "",
    backbone: str = "inception_v3",
) -> NamedTuple("WeightsOutputs", [("weights_uri", str), ("pretrained", bool)]):
    """Fetch and verify backbone weights into `<store>/weights/<sha256>/<file>`.

    `weights_url` "default" is the backbone's official file (Keras' cache is searched first);
    "none" trains from scratch: `weights_uri` is then empty and `pretrained` False. Empty hashes
    mean the backbone's published ones. The Model artifact's metadata carries source, sha256,
    size, backbone, pretrained and the store URI; its file is a small JSON record of the same.
    """
    from collections import namedtuple

    from components.common.logging import configure

    configure()
    from components.weights import artifacts
    from components.weights.fetch import WeightsConfig, run

    config = WeightsConfig(
        store=store, weights_url=weights_url, sha256=sha256, md5=md5, backbone=backbone
    )
    outputs = namedtuple("WeightsOutputs", ["weights_uri", "pretrained"])
    return outputs(*artifacts.publish(run(config), weights))


def make(image: str = DEFAULT_CPU_IMAGE) -> dsl.base_component.BaseComponent:
    """The component, built on `image` (the project image, which has this package installed)."""
    return dsl.component(weights, base_image=image, install_kfp_package=False)
