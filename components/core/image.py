"""The container image every component runs in on a cluster (built from infra/Dockerfile)."""

import os

# FMPIPE_COMPONENT_IMAGE names it otherwise, for `fmpipe run --runner container`, whose local engine
# knows the image by its local name (podman: localhost/...). Read when the components are imported.
COMPONENT_IMAGE = os.environ.get("FMPIPE_COMPONENT_IMAGE") or "fmpipe/python-components:0.1.0"
