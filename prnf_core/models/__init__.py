"""Conditional surrogates of p(X_T | X_0 = x0): the PRNF and an exact-inverse NSF baseline.

Each architecture registers its class in :data:`~prnf_core.models.base.ARCHITECTURES` where it
is defined; importing this package imports them all, so :func:`build_model` knows every one.
"""

from prnf_core.models.base import (
    ARCHITECTURES,
    ConditionalSampler,
    ModelConfig,
    build_model,
    load_metadata,
    load_model,
)
from prnf_core.models.conditioning import Conditioning
from prnf_core.models.nsf import NSF
from prnf_core.models.prnf import PRNF

__all__ = ["ARCHITECTURES", "NSF", "PRNF", "ConditionalSampler", "Conditioning", "ModelConfig",
           "build_model", "load_metadata", "load_model"]
