r"""The pseudo-reversible normalizing flow (Yang, Wang, del-Castillo-Negrete, Cao, Zhang,
SIAM J. Sci. Comput. 46(4) C508, 2024; arXiv:2306.05580).

Two unconstrained MLPs conditioned by concatenation on the normalized :math:`x_0` (and optional
extra condition ``c``: with ``ModelConfig.conditioning``, the time and SDE parameters
:math:`c = (t, θ)` normalized from their box to [-1, 1], so that one model gives
:math:`q(y \mid x_0;\, t, θ) \approx p(X_t = y \mid X_0 = x_0;\, θ)`):

* forward :math:`f_θ(x_0, y) \to z`, giving the density
  :math:`q(y\mid x_0) = ρ(f_θ(x_0, y))\,|\det ∇_y f_θ(x_0, y)|`, :math:`ρ = N(0, I_d)`;
* inverse :math:`g_φ(x_0, z) \to y`, used for sampling.

Loss on a minibatch of M normalized pairs, with reversibility weight λ (100 in the paper):

.. math::
    L = \frac1M \sum \big[-\log ρ(f(x_0, y)) - \log|\det ∇_y f(x_0, y)|\big]
        + λ\,\frac1M \sum \|g(x_0, f(x_0, y)) - y\|^2

The d×d Jacobian :math:`∇_y f` is propagated through the layers in the same forward pass
(:class:`JacobianMLP`): each layer maps the ``(n, d, H)`` tangent block with one matrix product
(the first layer's tangent folded into the second layer's weight), so the exact log-determinant
costs about d extra rows per sample in a few large products instead of d separate backward
passes; the arithmetic is the same, so the gain is in overheads (``benchmarks/bench_model.py``
measures it against the reference autograd loop).

>>> import numpy as np
>>> from prnf_core.models import ModelConfig, build_model
>>> model = build_model(ModelConfig(dim=2, hidden_width=16))
>>> model.fit_normalization(np.zeros((4, 2)), np.ones((4, 2)))
>>> model.log_prob(np.ones((3, 2)), np.zeros((3, 2))).shape
torch.Size([3])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from prnf_core.models.base import ArrayLike, ConditionalSampler, ModelConfig, architecture

_LOG_2PI = math.log(2 * math.pi)


def _activation(name: str):
    """The activation and its derivative, written from the pre-activation ``u``."""
    if name == "tanh":
        return torch.tanh, lambda u, a: 1 - a * a
    if name == "silu":
        def dsilu(u, a):
            s = torch.sigmoid(u)
            return s * (1 + u * (1 - s))
        return nn.functional.silu, dsilu
    if name == "softplus":
        return nn.functional.softplus, lambda u, a: torch.sigmoid(u)
    if name == "gelu":
        def dgelu(u, a):  # Φ(u) + u φ(u)
            phi = torch.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
            return 0.5 * (1 + torch.erf(u / math.sqrt(2))) + u * phi
        return nn.functional.gelu, dgelu
    if name == "elu":
        return nn.functional.elu, lambda u, a: torch.where(u > 0, torch.ones_like(u), a + 1)
    raise ValueError(f"activation must be one of tanh, silu, softplus, gelu, elu; got {name!r}")


class JacobianMLP(nn.Module):
    """An MLP ``[context, v] -> out`` that can also return ``∂out/∂v`` exactly.

    The last ``tangent_dim`` inputs are the variables ``v`` the Jacobian is taken with respect to.
    """

    def __init__(self, in_dim: int, out_dim: int, width: int, layers: int, activation: str,
                 tangent_dim: int) -> None:
        super().__init__()
        sizes = [in_dim] + [width] * layers + [out_dim]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.act, self.dact = _activation(activation)
        self.tangent_dim = tangent_dim

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        h = inp
        for linear in self.linears[:-1]:
            h = self.act(linear(h))
        return self.linears[-1](h)

    def forward_with_jacobian(self, inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(out (n, o), jac (n, o, d))`` with ``jac[i] = ∂out_i/∂v``."""
        n, d = inp.shape[0], self.tangent_dim
        first = self.linears[0]
        u = first(inp)
        h = self.act(u)
        # The first tangent block, W1[:, v] scaled by act'(u1), is folded into the next weight:
        # ∂u2/∂v_j = W2 (act'(u1) ⊙ W1[:, j]) = act'(u1) @ (W2 diag(W1[:, j]))^T, so one
        # (n, H1) x (H1, d·H2) product gives the (n, d, H2) pre-activation tangents without
        # materializing (and differentiating) the broadcast (n, d, H1) product.
        w_v = first.weight[:, -d:]
        folded = (w_v.unsqueeze(2) * self.linears[1].weight.T.unsqueeze(1)).reshape(len(w_v), -1)
        tangent = (self.dact(u, h) @ folded).view(n, d, -1)
        # Row j of the (n, d, H) block is the pre-activation tangent ∂u/∂v_j of the next layer.
        for linear, following in itertools.pairwise(self.linears[1:]):
            u = linear(h)
            h = self.act(u)
            tangent = tangent * self.dact(u, h).unsqueeze(1)
            tangent = (tangent.view(n * d, -1) @ following.weight.T).view(n, d, -1)
        return self.linears[-1](h), tangent.transpose(1, 2)


@architecture("prnf")
class PRNF(ConditionalSampler):
    """Pseudo-reversible normalizing flow (see module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        d, c = config.dim, self.context_dim
        width, layers, act = config.hidden_width, config.hidden_layers, config.activation
        self.forward_net = JacobianMLP(c + d, d, width, layers, act, tangent_dim=d)
        self.inverse_net = JacobianMLP(c + d, d, width, layers, act, tangent_dim=d)

    def forward_map(self, yn: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """:math:`z = f(x_0, y)` in normalized units (``y + r(x_0, y)`` if residual)."""
        out = self.forward_net(torch.cat([ctx, yn], dim=1))
        return yn + out if self.config.residual else out

    def inverse_map(self, z: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """:math:`\\hat y = g(x_0, z)` in normalized units (``z + s(x_0, z)`` if residual)."""
        out = self.inverse_net(torch.cat([ctx, z], dim=1))
        return z + out if self.config.residual else out

    def _z_and_logdet(self, yn: torch.Tensor, ctx: torch.Tensor):
        z, jac = self.forward_net.forward_with_jacobian(torch.cat([ctx, yn], dim=1))
        if self.config.residual:
            z, jac = yn + z, jac + torch.eye(self.dim, dtype=jac.dtype, device=jac.device)
        return z, torch.linalg.slogdet(jac)[1]

    def _log_prob_normalized(self, yn: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        z, logdet = self._z_and_logdet(yn, ctx)
        return -0.5 * (z * z).sum(dim=1) - 0.5 * self.dim * _LOG_2PI + logdet

    def _sample_normalized(self, ctx: torch.Tensor,
                           generator: torch.Generator | None) -> torch.Tensor:
        z = torch.randn(len(ctx), self.dim, generator=generator, device=ctx.device,
                        dtype=ctx.dtype)
        return self.inverse_map(z, ctx)

    def training_loss(self, yn: torch.Tensor, ctx: torch.Tensor, lam: float):
        z, logdet = self._z_and_logdet(yn, ctx)
        nll = (0.5 * (z * z).sum(dim=1) + 0.5 * self.dim * _LOG_2PI - logdet).mean()
        rev = ((self.inverse_map(z, ctx) - yn) ** 2).sum(dim=1).mean()
        return nll + lam * rev, {"nll": nll, "rev": rev}

    def reversibility_error(self, y: ArrayLike, x0: ArrayLike,
                            cond: ArrayLike | None = None, *, t: Any = None,
                            params: Mapping[str, Any] | None = None,
                            allow_outside: bool = False) -> torch.Tensor:
        x0_t, y_t, c_t = self._inputs(x0, y, cond, t=t, params=params,
                                      allow_outside=allow_outside)
        yn, ctx = self.normalize(x0_t, y_t, c_t)
        with torch.no_grad():
            return ((self.inverse_map(self.forward_map(yn, ctx), ctx) - yn) ** 2).sum(dim=1)
