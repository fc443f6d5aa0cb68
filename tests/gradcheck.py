"""Float64 central-difference gradient checks for layers, with one input or several."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cnnbuild.layers.base import Layer


def numerical_gradient(loss: Callable[[], float], array: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d loss / d array by central differences; ``array`` is perturbed in place and restored.

    loss: evaluates the scalar with the current contents of ``array`` (float64).
    """
    grad = np.zeros(array.shape)
    for index in np.ndindex(array.shape):
        old = array[index]
        array[index] = old + h
        plus = loss()
        array[index] = old - h
        minus = loss()
        array[index] = old
        grad[index] = (plus - minus) / (2 * h)
    return grad


def check_layer_gradients(
    layer: Layer,
    inputs: list[np.ndarray],
    *,
    train: bool = True,
    rng: np.random.Generator | None = None,
    seed: int = 0,
    rtol: float = 1e-5,
    atol: float = 1e-7,
) -> None:
    """Compare ``backward`` with central differences of L = sum(forward(inputs) * r).

    layer: already built in float64. inputs: one (N, *input_shape) array per input of the
    layer (a list of one for most layers). r is a fixed random array drawn from ``seed``.
    rng: the generator a random layer draws from (dropout); its state is restored before
    every forward, so every evaluation sees the same draws. Checks the gradient of every
    input and of every parameter, that backward returns a list with one gradient per input,
    and that neither backward writes into dy nor forward into its inputs; raises
    AssertionError naming the first gradient that differs.
    """
    xs = [np.array(x, dtype=np.float64) for x in inputs]
    originals = [x.copy() for x in xs]
    for key, param in layer.params.items():
        assert param.dtype == np.float64, f"param {key} is {param.dtype}; build in float64"
    start = None if rng is None else rng.bit_generator.state

    def run() -> np.ndarray:
        if rng is not None:
            rng.bit_generator.state = start
        return layer.forward(xs, train=train)

    y = run()
    weights = np.random.default_rng(seed).standard_normal(y.shape)

    def loss() -> float:
        return float(np.sum(run() * weights))

    dy = weights.copy()
    dxs = layer.backward(dy)
    np.testing.assert_array_equal(dy, weights, err_msg="backward wrote into dy")
    for x, original in zip(xs, originals, strict=True):
        np.testing.assert_array_equal(x, original, err_msg="forward wrote into its input")
    assert isinstance(dxs, list), f"backward returned {type(dxs).__name__}, not a list"
    assert len(dxs) == len(xs), f"backward returned {len(dxs)} gradients for {len(xs)} inputs"
    assert set(layer.grads) == set(layer.params), "grads and params have different keys"

    analytic = {f"dx[{i}]": (dx, x) for i, (dx, x) in enumerate(zip(dxs, xs, strict=True))}
    analytic.update({key: (layer.grads[key].copy(), layer.params[key]) for key in layer.params})
    for what, (grad, array) in analytic.items():
        assert grad.shape == array.shape, f"{what}: shape {grad.shape} != {array.shape}"
        np.testing.assert_allclose(
            grad,
            numerical_gradient(loss, array),
            rtol=rtol,
            atol=atol,
            err_msg=f"{layer.type_name} '{layer.name}' (train={train}): {what} differs",
        )
