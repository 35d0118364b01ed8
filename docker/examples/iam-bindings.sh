#!/bin/sh
# The IAM bindings the gateway example needs, and nothing more.
#
# Who is who:
#   baton-gateway@   baton's own identity (the Cloud Run service account of the
#                    gateway). Mints ID tokens for steps without service_account
#                    and impersonates the step accounts.
#   billing-step@    the identity of one workflow step (policy "service_account").
#                    Only this account may invoke the billing service.
# Both bindings are needed for a step with service_account: a missing
# roles/iam.serviceAccountOpenIdTokenCreator shows up as 503
# identity_permission_denied (audit reason, /readyz detail, an ERROR log line
# with this very command); a missing roles/run.invoker as 403 from Cloud Run.
set -eu
PROJECT_ID=${PROJECT_ID:?set PROJECT_ID}
REGION=${REGION:-us-central1}
BATON_SA="baton-gateway@${PROJECT_ID}.iam.gserviceaccount.com"
STEP_SA="billing-step@${PROJECT_ID}.iam.gserviceaccount.com"

gcloud services enable iamcredentials.googleapis.com run.googleapis.com --project "$PROJECT_ID"

gcloud iam service-accounts create baton-gateway --project "$PROJECT_ID" \
    --display-name "baton gateway runtime identity"
gcloud iam service-accounts create billing-step --project "$PROJECT_ID" \
    --display-name "Workflow step billing-reconcile"

# 1. baton may mint OpenID Connect ID tokens AS the step account (on the
#    step account, member = baton). Not on the project: per account.
gcloud iam service-accounts add-iam-policy-binding "$STEP_SA" --project "$PROJECT_ID" \
    --member "serviceAccount:${BATON_SA}" \
    --role roles/iam.serviceAccountOpenIdTokenCreator

# 2. The step account may invoke the billing service (on the service).
gcloud run services add-iam-policy-binding billing --project "$PROJECT_ID" --region "$REGION" \
    --member "serviceAccount:${STEP_SA}" --role roles/run.invoker

# 3. Steps without service_account call as baton itself (cleanup).
gcloud run services add-iam-policy-binding cleanup --project "$PROJECT_ID" --region "$REGION" \
    --member "serviceAccount:${BATON_SA}" --role roles/run.invoker

# 4. The gateway itself is called from AWS with AWS/Cognito tokens that baton
#    verifies, so Cloud Run's own invoker check is disabled on it (the YAML's
#    run.googleapis.com/invoker-iam-disabled annotation does the same).
gcloud run services update baton-gateway --project "$PROJECT_ID" --region "$REGION" \
    --no-invoker-iam-check

# 5. Audit evidence (docs/audit.md "Witness", "The evidence path on Cloud Run").
#    The witness bucket: baton may create objects there and nothing else (no
#    read, no overwrite, no delete: roles/storage.objectCreator), and a locked
#    retention policy keeps every object for 400 days whoever asks. Locking is
#    irreversible: the lock line stays commented until the period is right.
WITNESS_BUCKET=${WITNESS_BUCKET:-example-baton-audit-witness}
gcloud storage buckets create "gs://${WITNESS_BUCKET}" --project "$PROJECT_ID" \
    --location "$REGION" --uniform-bucket-level-access --public-access-prevention
gcloud storage buckets update "gs://${WITNESS_BUCKET}" --retention-period=400d
# gcloud storage buckets update "gs://${WITNESS_BUCKET}" --lock-retention-period
gcloud storage buckets add-iam-policy-binding "gs://${WITNESS_BUCKET}" \
    --member "serviceAccount:${BATON_SA}" --role roles/storage.objectCreator
#    The checkpoint signing key, from Secret Manager, readable by baton only.
gcloud services enable secretmanager.googleapis.com --project "$PROJECT_ID"
gcloud secrets add-iam-policy-binding baton-audit-signing-key --project "$PROJECT_ID" \
      --member "serviceAccount:${BATON_SA}" --role roles/secretmanager.secretAccessor

# 6. The metrics collector sidecar (Managed Service for Prometheus) writes
#    baton's /metrics to Cloud Monitoring as the service's own account; it
#    reads its scrape config from the secret baton-gmp-config
#    (docker/examples/runmonitoring.yaml).
gcloud projects add-iam-policy-binding "$PROJECT_ID" \
    --member "serviceAccount:${BATON_SA}" --role roles/monitoring.metricWriter
gcloud secrets add-iam-policy-binding baton-gmp-config --project "$PROJECT_ID" \
    --member "serviceAccount:${BATON_SA}" --role roles/secretmanager.secretAccessor

# Check: who may mint as the step account, who may invoke billing.
gcloud iam service-accounts get-iam-policy "$STEP_SA" --project "$PROJECT_ID"
gcloud run services get-iam-policy billing --project "$PROJECT_ID" --region "$REGION"
