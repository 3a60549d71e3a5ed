#!/usr/bin/env bash
# Create the GKE cluster and node pools for the transfer-learning pipeline, step by step and
# idempotently: anything that already exists is left as it is. docs/operations.md, step 1.
#
#   PROJECT_ID=my-project k8s/gke/create-cluster.sh
#
# Pools:
#   default-pool   CPU nodes for KFP itself and the CPU steps (autoscaled, never below 1).
#   gpu-pool       on-demand GPU nodes, autoscaled from zero, tainted nvidia.com/gpu.
#   gpu-spot-pool  the same on spot VMs (SPOT_POOL=true), also tainted cloud.google.com/gke-spot;
#                  runs submitted with spot=true land here.
# GKE labels GPU nodes cloud.google.com/gke-accelerator=$GPU_TYPE, which is the node selector the
# pipeline's GPU step uses (its gpu_type parameter, default nvidia-l4), and spot nodes
# cloud.google.com/gke-spot=true. The GPU driver is installed by GKE (gpu-driver-version=latest).
set -euo pipefail

: "${PROJECT_ID:?set PROJECT_ID to the Google Cloud project ID}"
REGION=${REGION:-us-central1}
# Zones for the nodes; the GPU zones must offer GPU_TYPE (gcloud compute accelerator-types list).
ZONES=${ZONES:-${REGION}-a}
GPU_ZONES=${GPU_ZONES:-$ZONES}
CLUSTER=${CLUSTER:-transfer-learning}
RELEASE_CHANNEL=${RELEASE_CHANNEL:-regular}
CPU_MACHINE_TYPE=${CPU_MACHINE_TYPE:-e2-standard-8}
CPU_MAX_NODES=${CPU_MAX_NODES:-3}
GPU_TYPE=${GPU_TYPE:-nvidia-l4}
# nvidia-l4 needs the G2 machine family; nvidia-tesla-t4 runs on n1-standard-*.
GPU_MACHINE_TYPE=${GPU_MACHINE_TYPE:-g2-standard-8}
GPU_MAX_NODES=${GPU_MAX_NODES:-2}
# Boot disk of the GPU nodes: the image layers (the GPU image is several GB), logs, and
# train_transfer's scratch emptyDir (SCRATCH_SIZE in pipelines/pipeline.py, 48Gi).
GPU_DISK_SIZE=${GPU_DISK_SIZE:-200}
GPU_DISK_TYPE=${GPU_DISK_TYPE:-pd-balanced}
SPOT_POOL=${SPOT_POOL:-true}
SPOT_MAX_NODES=${SPOT_MAX_NODES:-4}
# The VPC and subnet of the nodes (Private Google Access, below).
NETWORK=${NETWORK:-default}
SUBNET=${SUBNET:-default}
NODE_SA_NAME=${NODE_SA_NAME:-tl-gke-nodes}
NODE_SA="${NODE_SA_NAME}@${PROJECT_ID}.iam.gserviceaccount.com"

gcloud_project() {
    gcloud --project "$PROJECT_ID" --quiet "$@"
}

echo "== APIs"
gcloud_project services enable container.googleapis.com artifactregistry.googleapis.com \
    storage.googleapis.com iam.googleapis.com dns.googleapis.com

echo "== node service account $NODE_SA (least privilege: logs, metrics, image pulls)"
if ! gcloud_project iam service-accounts describe "$NODE_SA" >/dev/null 2>&1; then
    gcloud_project iam service-accounts create "$NODE_SA_NAME" \
        --display-name "GKE nodes of $CLUSTER"
fi
for role in roles/logging.logWriter roles/monitoring.metricWriter roles/monitoring.viewer \
    roles/stackdriver.resourceMetadata.writer roles/artifactregistry.reader; do
    gcloud_project projects add-iam-policy-binding "$PROJECT_ID" \
        --member "serviceAccount:$NODE_SA" --role "$role" --condition None >/dev/null
done

# Settings every node pool shares: Workload Identity metadata server, shielded nodes,
# the node service account above, auto-repair and auto-upgrade.
common_pool_flags=(
    --service-account "$NODE_SA"
    --workload-metadata GKE_METADATA
    --shielded-secure-boot
    --shielded-integrity-monitoring
    --enable-autorepair
    --enable-autoupgrade
)

echo "== cluster $CLUSTER in $REGION ($ZONES)"
if ! gcloud_project container clusters describe "$CLUSTER" --region "$REGION" >/dev/null 2>&1; then
    gcloud_project container clusters create "$CLUSTER" \
        --region "$REGION" \
        --node-locations "$ZONES" \
        --release-channel "$RELEASE_CHANNEL" \
        --workload-pool "${PROJECT_ID}.svc.id.goog" \
        --enable-dataplane-v2 \
        --enable-ip-alias \
        --enable-shielded-nodes \
        --logging SYSTEM,WORKLOAD \
        --monitoring SYSTEM \
        --machine-type "$CPU_MACHINE_TYPE" \
        --num-nodes 1 \
        --enable-autoscaling --min-nodes 1 --max-nodes "$CPU_MAX_NODES" \
        "${common_pool_flags[@]}"
fi

create_gpu_pool() {
    local name=$1 max_nodes=$2
    shift 2
    if gcloud_project container node-pools describe "$name" --cluster "$CLUSTER" \
        --region "$REGION" >/dev/null 2>&1; then
        echo "node pool $name exists"
        return
    fi
    gcloud_project container node-pools create "$name" \
        --cluster "$CLUSTER" \
        --region "$REGION" \
        --node-locations "$GPU_ZONES" \
        --machine-type "$GPU_MACHINE_TYPE" \
        --accelerator "type=${GPU_TYPE},count=1,gpu-driver-version=latest" \
        --disk-size "$GPU_DISK_SIZE" \
        --disk-type "$GPU_DISK_TYPE" \
        --num-nodes 0 \
        --enable-autoscaling --min-nodes 0 --max-nodes "$max_nodes" \
        "${common_pool_flags[@]}" \
        "$@"
}

echo "== GPU node pool gpu-pool ($GPU_TYPE on $GPU_MACHINE_TYPE, 0..$GPU_MAX_NODES per zone)"
create_gpu_pool gpu-pool "$GPU_MAX_NODES" \
    --node-taints nvidia.com/gpu=present:NoSchedule

if [ "$SPOT_POOL" = "true" ]; then
    echo "== spot GPU node pool gpu-spot-pool (0..$SPOT_MAX_NODES per zone)"
    create_gpu_pool gpu-spot-pool "$SPOT_MAX_NODES" \
        --spot \
        --location-policy ANY \
        --node-taints nvidia.com/gpu=present:NoSchedule,cloud.google.com/gke-spot=true:NoSchedule
fi

# The pipeline task pods' NetworkPolicy (k8s/base/task-network-policy.yaml) allows Google APIs
# only at private.googleapis.com (199.36.153.8/30): Private Google Access on the subnet, and a
# private DNS zone that resolves *.googleapis.com there for the whole VPC.
echo "== Private Google Access: *.googleapis.com -> private.googleapis.com in $NETWORK"
gcloud_project compute networks subnets update "$SUBNET" --region "$REGION" \
    --enable-private-ip-google-access
if ! gcloud_project dns managed-zones describe tl-googleapis >/dev/null 2>&1; then
    gcloud_project dns managed-zones create tl-googleapis --dns-name googleapis.com. \
        --visibility private --networks "$NETWORK" \
        --description "googleapis.com through Private Google Access ($CLUSTER)"
    gcloud_project dns record-sets create private.googleapis.com. --zone tl-googleapis \
        --type A --ttl 300 --rrdatas 199.36.153.8,199.36.153.9,199.36.153.10,199.36.153.11
    gcloud_project dns record-sets create "*.googleapis.com." --zone tl-googleapis \
        --type CNAME --ttl 300 --rrdatas private.googleapis.com.
fi

echo "== kubectl credentials"
gcloud_project container clusters get-credentials "$CLUSTER" --region "$REGION"
kubectl get nodes -L cloud.google.com/gke-accelerator,cloud.google.com/gke-spot
