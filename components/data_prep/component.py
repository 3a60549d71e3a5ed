"""KFP component for data prep: source -> Dataset artifact (manifest) + content-addressed URI."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.common.images import DEFAULT_CPU_IMAGE


def data_prep(
    dataset: Output[Dataset],
    store: str,
    source: str = "auto",
    dataset_name: str = "fashion_mnist",
    limit: int = 0,
    val_fraction: float = 0.1,
    seed: int = 42,
    image_size: str = "auto",
) -> NamedTuple("DataPrepOutputs", [("dataset_uri", str), ("version", str)]):
    """Prepare the dataset in the store; `limit` 0 keeps every image.

    `image_size`: "auto" keeps uniform sizes and centre-crops mixed ones to 150x150; "HxW" or
    "N" resizes (aspect kept) and centre-crops every image of a folder source to it.

    Outputs the dataset folder URI (its last segment is the content version) as a parameter, so
    that downstream cache keys follow the data's content, and a Dataset artifact whose file is
    the manifest and whose metadata carries the URI, version and counts for the KFP UI.
    """
    from collections import namedtuple

    from components.common.logging import configure

    configure()
    from components.data_prep import artifacts
    from components.data_prep.photos import parse_image_size
    from components.data_prep.prep import PrepConfig, run

    config = PrepConfig(
        store=store,
        source=source,
        dataset_name=dataset_name,
        limit=limit,
        val_fraction=val_fraction,
        seed=seed,
        image_size=parse_image_size(image_size),
    )
    outputs = namedtuple("DataPrepOutputs", ["dataset_uri", "version"])
    return outputs(*artifacts.publish(run(config), dataset))


def make(image: str = DEFAULT_CPU_IMAGE) -> dsl.base_component.BaseComponent:
    """The component, built on `image` (the project image, which has this package installed)."""
    return dsl.component(data_prep, base_image=image, install_kfp_package=False)
