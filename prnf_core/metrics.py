"""Moved: exact KL and the sampler check live in :mod:`prnf_core.validation.kl`.

This module only re-exports them for code that still imports ``prnf_core.metrics``; import from
:mod:`prnf_core.validation` instead.
"""

from prnf_core.validation.kl import *  # noqa: F403
from prnf_core.validation.kl import __all__  # noqa: F401
