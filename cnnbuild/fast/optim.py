"""The fast engine's optimizers: the updates of Adam and momentum in one compiled pass over
each parameter instead of numpy's five to ten."""

from __future__ import annotations

import numpy as np

from cnnbuild.fast import kernels
from cnnbuild.optim import Adam, Momentum


class FastAdam(Adam):
    """Adam, its update in one compiled pass."""

    def _update(
        self, p: np.ndarray, g: np.ndarray, tmp: np.ndarray, m: np.ndarray, v: np.ndarray
    ) -> None:
        config = self.config
        kernels.adam_update(
            *(a.reshape(-1) for a in (p, g, m, v)),
            self.lr,
            config["beta1"],
            config["beta2"],
            config["eps"],
            self.t,
        )


class FastMomentum(Momentum):
    """Heavy-ball momentum, its update in one compiled pass."""

    def _update(self, p: np.ndarray, g: np.ndarray, tmp: np.ndarray, v: np.ndarray) -> None:
        kernels.momentum_update(
            p.reshape(-1), g.reshape(-1), v.reshape(-1), self.lr, self.config["momentum"]
        )
