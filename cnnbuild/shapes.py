"""The integer maths of output sizes, in one place."""

from __future__ import annotations

from cnnbuild.errors import ShapeError


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


def same_padding(kernel: int) -> int:
    """Padding that keeps the size at stride 1 (kernel must be odd)."""
    return (kernel - 1) // 2
