"""Where the GPU step runs on GKE: node selector and tolerations from the run's parameters.

GPU type and spot are run parameters (changeable in the KFP UI), while a node selector is one
JSON object per task; a small `gpu_placement` task turns the parameters into that object and a
toleration list, which kfp-kubernetes feeds to `train_transfer` (`node_selector_json`,
`toleration_json`). The pure functions here are what that task runs.
"""

from __future__ import annotations

from components.common.config import ConfigError

GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
GKE_SPOT_LABEL = "cloud.google.com/gke-spot"
GPU_RESOURCE = "nvidia.com/gpu"

# GKE taints GPU nodes with nvidia.com/gpu=present:NoSchedule.
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
# The spot node pool's taint (k8s/gke creates the pool with it).
SPOT_TOLERATION = {
    "key": GKE_SPOT_LABEL,
    "operator": "Equal",
    "value": "true",
    "effect": "NoSchedule",
}


def node_selector(gpu_type: str, spot: bool) -> dict[str, str]:
    """The node labels the GPU task needs: the accelerator type, and spot when asked."""
    if not gpu_type or gpu_type != gpu_type.strip() or "/" in gpu_type:
        raise ConfigError(
            f"gpu_type must be a GKE accelerator name like nvidia-l4, got {gpu_type!r}"
        )
    labels = {GKE_ACCELERATOR_LABEL: gpu_type}
    if spot:
        labels[GKE_SPOT_LABEL] = "true"
    return labels


def tolerations(spot: bool) -> list[dict[str, str]]:
    """The taints the GPU task tolerates; never empty (the GPU toleration is always there)."""
    return [dict(GPU_TOLERATION), *([dict(SPOT_TOLERATION)] if spot else [])]
