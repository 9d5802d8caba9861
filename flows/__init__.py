"""Prefect flows over the pipeline's stage functions, and their deployment definitions."""
