"""A third-party unlearning method, shipped in its own package and found by the harness through
the ``harness.methods`` entry-point group (see methods/README.md). Used by the tests."""

from __future__ import annotations

from methods import losses
from methods.base import UnlearningMethod


class ScaledAscent(UnlearningMethod):
    """Gradient ascent with the forget loss capped at ``cap`` nats (a toy third-party method)."""

    name = "scaled_ascent"
    paper = "test plugin"
    retain_reg = "gdr"

    def forget_loss(self, model, batch, ref):
        return -losses.mean_nll(model, batch).clamp(max=20.0)
