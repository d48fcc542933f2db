"""Thin Prefect tasks around prnf_core: retries, logging, artifacts; small metadata returned."""

from tasks.env import apply_defaults

apply_defaults()
