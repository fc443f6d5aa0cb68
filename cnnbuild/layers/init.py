"""Weight initialisation, drawn from the network's generator (never global random state).

Values are drawn in float64 and then cast, so a float32 and a float64 build from the same
seed hold the same weights up to rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt


def he(shape: tuple[int, ...], fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """Normal with standard deviation sqrt(2 / fan_in), for ReLU networks."""
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)


def xavier(
    shape: tuple[int, ...], fan_in: int, fan_out: int, rng: np.random.Generator
) -> np.ndarray:
    """Uniform on ±sqrt(6 / (fan_in + fan_out)) (Glorot)."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape)


def normal(
    shape: tuple[int, ...], fan_in: int, fan_out: int, rng: np.random.Generator
) -> np.ndarray:
    """Normal with standard deviation 1 / sqrt(fan_in), the report's initialisation."""
    return rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)


INITIALISERS: dict[str, Callable[..., np.ndarray]] = {"he": he, "xavier": xavier, "normal": normal}


def init_weights(
    kind: str,
    shape: tuple[int, ...],
    fan_in: int,
    fan_out: int,
    rng: np.random.Generator,
    dtype: npt.DTypeLike = np.float32,
) -> np.ndarray:
    """Weights of ``shape`` initialised by ``kind`` ("he", "xavier" or "normal") in ``dtype``.

    Conv weights (F, C, k, k) have fan_in = C*k*k and fan_out = F*k*k; dense weights
    (D, units) have fan_in = D and fan_out = units.
    """
    return INITIALISERS[kind](shape, fan_in, fan_out, rng).astype(dtype, copy=False)
