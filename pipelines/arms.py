"""The training arms of a run: which trainings the pipeline's ParallelFor loops run.

- the CNN, once per seed;
- per backbone and seed, the pretrained arm (unless `weights_url` is "none") and the
  from-scratch arm (when `scratch` is set, and always when `weights_url` is "none", where it
  replaces the pretrained arm): exactly one scratch run per (backbone, seed) when it runs.

Seeds are `seed`, `seed + 1`, ... (`seeds` of them). Several backbones each fetch their own
published weights ("default"): a custom weights URL or hash is for one backbone only.

No `from __future__ import annotations` here: KFP reads the components' annotations as types.
"""

from typing import Any

from components.common.backbones import BACKBONES
from components.common.config import ConfigError

NONE, DEFAULT = "none", "default"
MAX_SEEDS = 20


def parse_backbones(text: str) -> list[str]:
    """The comma-separated backbone list, each a registry entry, without repeats."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"backbones: name at least one of {sorted(BACKBONES)}")
    unknown = [name for name in names if name not in BACKBONES]
    if unknown:
        raise ConfigError(f"backbones: unknown {unknown}; known: {sorted(BACKBONES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"backbones: {text!r} names a backbone twice")
    return names


def seed_list(seeds: int, seed: int) -> list[int]:
    """The seeds of every training arm: seed, seed + 1, ... (`seeds` of them)."""
    if not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"seeds must be 1 to {MAX_SEEDS}, got {seeds}")
    return list(range(seed, seed + seeds))


def plan(
    backbones: str,
    seeds: int,
    seed: int,
    scratch: bool,
    weights_url: str,
    weights_sha256: str = "",
    weights_md5: str = "",
) -> dict[str, list[Any]]:
    """`{"cnn_seeds": [int], "backbone_arms": [{backbone, seed, scratch, weights_url, ...}]}`."""
    names = parse_backbones(backbones)
    run_seeds = seed_list(seeds, seed)
    no_weights = weights_url.strip().lower() == NONE
    if len(names) > 1 and not no_weights and weights_url.strip().lower() != DEFAULT:
        raise ConfigError(
            f"weights_url {weights_url!r} is one backbone's file, but backbones names "
            f"{len(names)}; use 'default' (each backbone's published weights) or 'none'"
        )
    if len(names) > 1 and (weights_sha256 or weights_md5):
        raise ConfigError(
            "weights_sha256 and weights_md5 pin one backbone's file; leave them empty with "
            f"several backbones ({', '.join(names)}): each default file has its published hash"
        )
    arms = []
    for name in names:
        for value in run_seeds:
            if not no_weights:
                arms.append(
                    {
                        "backbone": name,
                        "seed": value,
                        "scratch": False,
                        "weights_url": weights_url,
                        "weights_sha256": weights_sha256,
                        "weights_md5": weights_md5,
                    }
                )
            if scratch or no_weights:
                arms.append(
                    {
                        "backbone": name,
                        "seed": value,
                        "scratch": True,
                        "weights_url": NONE,
                        "weights_sha256": "",
                        "weights_md5": "",
                    }
                )
    return {"cnn_seeds": run_seeds, "backbone_arms": arms}


def plan_cnn_seeds(dataset_uri: str, seeds: int, seed: int) -> list:
    """KFP component: the CNN's runs `{seed, dataset_uri}`, the items of its ParallelFor.

    One list output each: kfp.local 2.17 iterates only over a task's single `Output`. The
    dataset URI travels in the items because kfp.local 2.17 hands a loop's tasks the loop item
    in place of any other task output passed into the loop.
    """
    from pipelines.arms import seed_list

    return [{"seed": value, "dataset_uri": dataset_uri} for value in seed_list(seeds, seed)]


def plan_backbone_arms(
    dataset_uri: str,
    backbones: str,
    seeds: int,
    seed: int,
    scratch: bool,
    weights_url: str,
    weights_sha256: str,
    weights_md5: str,
) -> list:
    """KFP component: the backbone arms, the items of their ParallelFor (see plan).

    Each item also carries `dataset_uri` (see plan_cnn_seeds).
    """
    from pipelines.arms import plan

    planned = plan(backbones, seeds, seed, scratch, weights_url, weights_sha256, weights_md5)
    return [{**arm, "dataset_uri": dataset_uri} for arm in planned["backbone_arms"]]
