"""KFP component for the weights step: URL + hash -> verified, content-addressed weights file."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Model, Output

DEFAULT_IMAGE = "us-docker.pkg.dev/my-project/transfer-learning/tl-cpu:latest"


def weights(
    weights: Output[Model],
    store: str,
    url: str = "default",
    sha256: str = "",
    md5: str = "",
    backbone: str = "inception_v3",
) -> NamedTuple("WeightsOutputs", [("weights_uri", str), ("pretrained", bool)]):
    """Fetch and verify backbone weights into `<store>/weights/<sha256>/<file>`.

    `url` "default" is the backbone's official file (Keras' cache is searched first); "none"
    trains from scratch: `weights_uri` is then empty and `pretrained` False. Empty hashes mean
    the backbone's published ones. The Model artifact's metadata carries source, sha256, size,
    backbone, pretrained and the store URI; its file is a small JSON record of the same.
    """
    import json
    from collections import namedtuple

    from components.common.logging import configure
    from components.weights.fetch import WeightsConfig, run

    configure()
    result = run(
        WeightsConfig(
            store=store, url=url, sha256=sha256 or None, md5=md5 or None, backbone=backbone
        )
    )
    record = {
        "uri": result.uri,
        "source": result.source,
        "sha256": result.sha256,
        "size": result.size,
        "backbone": result.backbone,
        "pretrained": result.pretrained,
        "cache_hit": result.cache_hit,
    }
    with open(weights.path, "w") as handle:
        json.dump(record, handle, indent=2)
    weights.metadata.update({key: value for key, value in record.items() if value is not None})
    outputs = namedtuple("WeightsOutputs", ["weights_uri", "pretrained"])
    return outputs(result.uri or "", result.pretrained)


def make(image: str = DEFAULT_IMAGE) -> dsl.base_component.BaseComponent:
    """The component, built on `image` (the project image, which has this package installed)."""
    return dsl.component(weights, base_image=image, install_kfp_package=False)
