"""Python configs (ml_collections): model registry and the four curriculum stages."""
