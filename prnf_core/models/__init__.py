"""Conditional surrogates of p(X_T | X_0 = x0): the PRNF and an exact-inverse NSF baseline."""

from prnf_core.models.base import (
    ConditionalSampler,
    ModelConfig,
    build_model,
    load_metadata,
    load_model,
)

__all__ = ["ConditionalSampler", "ModelConfig", "build_model", "load_metadata", "load_model"]
