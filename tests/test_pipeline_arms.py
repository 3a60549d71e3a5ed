"""The training arms a run plans: backbones x seeds x (pretrained, scratch), and the CNN."""

from __future__ import annotations

import pytest

from components.common.config import ConfigError
from pipelines import profiles
from pipelines.arms import plan, seed_list
from pipelines.pipeline import build_pipeline


def kinds(planned: dict) -> list[tuple[str, int, bool]]:
    return [(arm["backbone"], arm["seed"], arm["scratch"]) for arm in planned["backbone_arms"]]


def test_the_default_is_one_pretrained_arm_and_one_cnn():
    planned = plan("inception_v3", 1, 42, False, "default")
    assert planned["cnn_seeds"] == [42]
    assert kinds(planned) == [("inception_v3", 42, False)]
    assert planned["backbone_arms"][0]["weights_url"] == "default"


def test_scratch_adds_one_scratch_arm_per_backbone_and_seed_without_weights():
    planned = plan("inception_v3,resnet50_v2", 2, 1, True, "default")
    assert planned["cnn_seeds"] == [1, 2]
    assert kinds(planned) == [
        ("inception_v3", 1, False),
        ("inception_v3", 1, True),
        ("inception_v3", 2, False),
        ("inception_v3", 2, True),
        ("resnet50_v2", 1, False),
        ("resnet50_v2", 1, True),
        ("resnet50_v2", 2, False),
        ("resnet50_v2", 2, True),
    ]
    for arm in planned["backbone_arms"]:
        if arm["scratch"]:
            assert (arm["weights_url"], arm["weights_sha256"], arm["weights_md5"]) == (
                "none",
                "",
                "",
            )


@pytest.mark.parametrize("scratch", [False, True])
def test_weights_none_runs_the_scratch_arm_instead_of_the_pretrained_one(scratch):
    planned = plan("resnet50_v2", 3, 7, scratch, "none")
    assert kinds(planned) == [
        ("resnet50_v2", 7, True),
        ("resnet50_v2", 8, True),
        ("resnet50_v2", 9, True),
    ]
    assert planned["cnn_seeds"] == [7, 8, 9]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("vgg16", 1, 1, False, "default"), r"backbones: unknown \['vgg16'\]"),
        ((" , ", 1, 1, False, "default"), "backbones: name at least one"),
        (("resnet50_v2,resnet50_v2", 1, 1, False, "default"), "names a backbone twice"),
        (("inception_v3", 0, 1, False, "default"), "seeds must be 1 to 20, got 0"),
        (("inception_v3,resnet50_v2", 1, 1, False, "https://x/w.h5"), "one backbone's file"),
        (("inception_v3,resnet50_v2", 1, 1, False, "default", "ab"), "pin one backbone's file"),
    ],
)
def test_bad_arm_parameters_are_clear_errors(arguments, message):
    with pytest.raises(ConfigError, match=message):
        plan(*arguments)


def test_the_cli_takes_backbone_as_the_older_name_of_backbones():
    pipeline = build_pipeline()
    values = profiles.parse_params(["backbone=resnet50_v2", "seeds=2", "scratch=true"], pipeline)
    assert values == {"backbones": "resnet50_v2", "seeds": 2, "scratch": True}


def test_the_cnn_loop_runs_the_same_seeds():
    assert seed_list(3, 5) == plan("inception_v3", 3, 5, False, "default")["cnn_seeds"] == [5, 6, 7]


def test_the_plan_components_put_the_dataset_uri_in_every_item():
    from pipelines.arms import plan_backbone_arms, plan_cnn_seeds

    runs = plan_cnn_seeds("gs://b/datasets/x/v1", 2, 3)
    assert runs == [
        {"seed": 3, "dataset_uri": "gs://b/datasets/x/v1"},
        {"seed": 4, "dataset_uri": "gs://b/datasets/x/v1"},
    ]
    arms = plan_backbone_arms("gs://b/datasets/x/v1", "inception_v3", 1, 3, True, "default", "", "")
    assert [(arm["scratch"], arm["dataset_uri"]) for arm in arms] == [
        (False, "gs://b/datasets/x/v1"),
        (True, "gs://b/datasets/x/v1"),
    ]
