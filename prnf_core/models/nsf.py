r"""Exact-inverse baseline: a conditional neural spline flow from zuko (Durkan et al. 2019).

Coupling layers (``passes=2``), so sampling is one pass like the PRNF generator; the same
interface, normalization and persistence as :class:`~prnf_core.models.prnf.PRNF`. For d = 1
zuko uses an element-wise conditional spline.
"""

from __future__ import annotations

import torch
import zuko

from prnf_core.models.base import ConditionalSampler, ModelConfig, architecture


@architecture("nsf")
class NSF(ConditionalSampler):
    """Conditional coupling neural spline flow (zuko), the exact-inverse baseline."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        d = config.dim
        self.flow = zuko.flows.NSF(
            features=d, context=self.context_dim, transforms=config.transforms, bins=config.bins,
            passes=2 if d > 1 else None,
            hidden_features=[config.hidden_width] * config.hidden_layers,
        )

    def _log_prob_normalized(self, yn: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        return self.flow(ctx).log_prob(yn)

    def _sample_normalized(self, ctx: torch.Tensor,
                           generator: torch.Generator | None) -> torch.Tensor:
        dist = self.flow(ctx)
        z = torch.randn(len(ctx), self.dim, generator=generator, device=ctx.device,
                        dtype=ctx.dtype)
        return dist.transform.inv(z)

    def forward_map(self, yn: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        return self.flow(ctx).transform(yn)
