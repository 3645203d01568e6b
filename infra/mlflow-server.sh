#!/usr/bin/env bash
# A shared MLflow tracking server + registry for a team: PostgreSQL backend, artifact store
# on disk (swap --artifacts-destination for s3://... or gs://... in a real deployment).
#   infra/mlflow-server.sh postgresql+psycopg2://mlflow:secret@localhost:5432/mlflow /srv/mlflow-artifacts
# Then point fmpipe at it: fmpipe run -S registry.tracking_uri=http://HOST:5000
set -euo pipefail
BACKEND=${1:?backend store URI, e.g. postgresql+psycopg2://user:pass@host:5432/mlflow}
ARTIFACTS=${2:?artifact destination, e.g. /srv/mlflow-artifacts}
export MLFLOW_DISABLE_TELEMETRY=true
exec mlflow server --backend-store-uri "$BACKEND" --artifacts-destination "$ARTIFACTS" \
  --serve-artifacts --host 0.0.0.0 --port "${PORT:-5000}"
