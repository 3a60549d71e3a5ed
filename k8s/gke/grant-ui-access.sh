#!/usr/bin/env bash
# Let the KFP UI open the pipeline's artifacts (HTML report, Markdown summary, metrics) in the
# bucket, and nothing else in it: docs/operations.md, step 4.
#
#   PROJECT_ID=my-project BUCKET=my-project-tl-store k8s/gke/grant-ui-access.sh
#
# The KFP 2.17 UI server reads gs:// artifacts with Google's Application Default Credentials
# (frontend/server/gcs-helper.ts, getGCSClient: GoogleAuth with no key unless a provider Secret
# is configured), listing the prefix and then downloading (handlers/artifacts.ts,
# getGCSArtifactHandler). On GKE those credentials are the Workload Identity of its Kubernetes
# service account, kubeflow/ml-pipeline-ui. That account gets a Google service account of its
# own with roles/storage.objectViewer on the bucket, under an IAM condition: objects under
# PIPELINE_ROOT_PREFIX, and listings of that prefix only (storage.googleapis.com/objectListPrefix).
set -euo pipefail

: "${PROJECT_ID:?set PROJECT_ID to the Google Cloud project ID}"
: "${BUCKET:?set BUCKET to the store bucket name (no gs://)}"
# The defaultPipelineRoot of the kfp-launcher ConfigMap is gs://$BUCKET/$PIPELINE_ROOT_PREFIX.
PIPELINE_ROOT_PREFIX=${PIPELINE_ROOT_PREFIX:-pipeline-root/}
KFP_NAMESPACE=${KFP_NAMESPACE:-kubeflow}
UI_KSA=${UI_KSA:-ml-pipeline-ui}
UI_GSA_NAME=${UI_GSA_NAME:-tl-kfp-ui}
UI_GSA="${UI_GSA_NAME}@${PROJECT_ID}.iam.gserviceaccount.com"

case "$PIPELINE_ROOT_PREFIX" in
    */) ;;
    *) echo "PIPELINE_ROOT_PREFIX must end with /" >&2; exit 2 ;;
esac

gcloud_project() {
    gcloud --project "$PROJECT_ID" --quiet "$@"
}

echo "== Google service account $UI_GSA (KFP UI, read-only, pipeline root only)"
if ! gcloud_project iam service-accounts describe "$UI_GSA" >/dev/null 2>&1; then
    gcloud_project iam service-accounts create "$UI_GSA_NAME" \
        --display-name "KFP UI: read pipeline artifacts"
fi

condition="title=pipeline-root-only,description=KFP artifacts under gs://${BUCKET}/${PIPELINE_ROOT_PREFIX},expression="
condition+="resource.name.startsWith(\"projects/_/buckets/${BUCKET}/objects/${PIPELINE_ROOT_PREFIX}\")"
condition+=" || api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith(\"${PIPELINE_ROOT_PREFIX}\")"
gcloud_project storage buckets add-iam-policy-binding "gs://${BUCKET}" \
    --member "serviceAccount:${UI_GSA}" --role roles/storage.objectViewer \
    --condition "$condition" >/dev/null

echo "== Workload Identity: ${KFP_NAMESPACE}/${UI_KSA} acts as $UI_GSA"
gcloud_project iam service-accounts add-iam-policy-binding "$UI_GSA" \
    --role roles/iam.workloadIdentityUser \
    --member "serviceAccount:${PROJECT_ID}.svc.id.goog[${KFP_NAMESPACE}/${UI_KSA}]" >/dev/null
# The account belongs to the KFP manifests; only the annotation is added here.
kubectl -n "$KFP_NAMESPACE" annotate serviceaccount "$UI_KSA" --overwrite \
    "iam.gke.io/gcp-service-account=${UI_GSA}"
kubectl -n "$KFP_NAMESPACE" rollout restart deployment/ml-pipeline-ui
kubectl -n "$KFP_NAMESPACE" rollout status deployment/ml-pipeline-ui --timeout=5m
