"""The container image every component runs in on a cluster (built from infra/Dockerfile)."""

COMPONENT_IMAGE = "fmpipe/python-components:0.1.0"
