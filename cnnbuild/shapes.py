"""The integer maths of output sizes, in one place."""

from __future__ import annotations

import math
from collections.abc import Sequence

from cnnbuild.errors import ShapeError

Pair = tuple[int, int]


def pair(value: int | Sequence[int]) -> Pair:
    """A size given as one number or as [height, width] -> (height, width)."""
    if isinstance(value, int):
        return value, value
    height, width = value
    return int(height), int(width)


def window_output(size: int, window: int, stride: int, pad: int, what: str) -> int:
    """Output length of a sliding window: floor((size + 2*pad - window) / stride) + 1.

    Raises ShapeError with the arithmetic when the window does not fit.
    """
    padded = size + 2 * pad
    if window > padded:
        raise ShapeError(
            f"{what} {window} is larger than its input: size {size} + 2*padding {pad} "
            f"= {padded} < {window}"
        )
    return (padded - window) // stride + 1


def dilated(kernel: int, dilation: int) -> int:
    """The span of a kernel whose taps are ``dilation`` apart: (kernel-1)*dilation + 1."""
    return (kernel - 1) * dilation + 1


def same_padding(kernel: int, dilation: int = 1) -> int:
    """Padding that keeps the size at stride 1 (kernel must be odd)."""
    return (kernel - 1) * dilation // 2


def divisors(number: int) -> str:
    """The divisors of ``number``, listed for messages: "1, 2, 4"."""
    small = [d for d in range(1, math.isqrt(number) + 1) if number % d == 0]
    large = [number // d for d in reversed(small) if d * d != number]
    return ", ".join(map(str, small + large))
