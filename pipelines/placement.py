"""Where the GPU step runs on GKE: node selector and tolerations from the run's parameters.

GPU type and spot are run parameters (changeable in the KFP UI), while a node selector is one
JSON object per task; a small `gpu_placement` task turns the parameters into that object and a
toleration list, which kfp-kubernetes feeds to `train_transfer` (`node_selector_json`,
`toleration_json`). The pure functions here are what that task runs.
"""

from __future__ import annotations

from typing import NamedTuple

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


# What train_transfer may use on the one-GPU machine of each supported accelerator. Allocatable is
# GKE's formula (docs/operations.md, "Node-sized resources"): memory less 25 % of the first 4 GiB,
# 20 % of the next 4, 10 % of the next 8, 6 % of the next 112, 2 % above, and a 100 MiB eviction
# threshold; CPU less 6 % of the first core, 1 % of the next, 0.5 % of the next two, 0.25 % above.
# Requests and limits stay about 1 CPU and 2-4 GiB below that, for GKE's daemonsets on the node.
class GpuNode(NamedTuple):
    """One supported accelerator: its machine type, allocatable and the task's sizing."""

    machine_type: str
    allocatable_cpu: float  # cores
    allocatable_memory_gib: float
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


GPU_NODES: dict[str, GpuNode] = {
    "nvidia-l4": GpuNode("g2-standard-8", 7.91, 28.3, "6", "7", "22Gi", "24Gi"),
    "nvidia-tesla-t4": GpuNode("n1-standard-8", 7.91, 26.4, "6", "7", "20Gi", "22Gi"),
    "nvidia-tesla-a100": GpuNode("a2-highgpu-1g", 11.9, 78.2, "10", "11", "64Gi", "72Gi"),
    "nvidia-h100-80gb": GpuNode("a3-highgpu-1g", 25.86, 222.4, "22", "24", "180Gi", "200Gi"),
}


def gpu_node(gpu_type: str) -> GpuNode:
    """The sizing row of a supported accelerator; a clear error for any other name."""
    if gpu_type not in GPU_NODES:
        raise ConfigError(
            f"gpu_type {gpu_type!r} is not supported; choose one of {', '.join(GPU_NODES)}"
        )
    return GPU_NODES[gpu_type]


def _gib(quantity: str) -> float:
    return float(quantity.removesuffix("Gi"))


def check_fits(gpu_type: str, sized_for: str) -> None:
    """Refuse a run-time gpu_type whose node cannot hold the resources compiled for `sized_for`.

    Requests and limits are compiled in (KFP resolves no parameters there but the accelerator
    count), so a run may pick another accelerator only when its node is at least as large.
    """
    node, compiled = gpu_node(gpu_type), gpu_node(sized_for)
    if float(compiled.cpu_limit) > node.allocatable_cpu or _gib(compiled.memory_limit) > (
        node.allocatable_memory_gib
    ):
        raise ConfigError(
            f"gpu_type {gpu_type!r} ({node.machine_type}) cannot hold the resources this pipeline "
            f"was compiled with for {sized_for!r} ({compiled.cpu_limit} CPU, "
            f"{compiled.memory_limit}); compile it with --gpu-type {gpu_type}"
        )
