"""Optimizers over flat dicts of named parameters ("conv1.W", "bn1.gamma").

Layers know nothing of optimizers: an optimizer is given the layers' own parameter arrays
once and updates them in place from a gradient dict with the same keys. State and scratch
buffers are allocated at construction, so ``step`` allocates no arrays.

The update rules follow torch.optim (one parameter group, no extras), written out in each
class docstring with ``g`` the gradient after weight decay.

``weight_decay`` is coupled L2 regularisation, as torch.optim's ``weight_decay``: before the
update, ``g = grad + weight_decay * p`` -- only for the parameters whose layer declares that
weight decay applies to them (``Role.decay``: conv and dense weights), never for biases or
batch-norm ``gamma``/``beta``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np

from cnnbuild.checkpoint import CheckpointError, load_into
from cnnbuild.layers.base import Role
from cnnbuild.options import Option, Registry, check_config, number

T = TypeVar("T")

WEIGHT_DECAY = number(
    "Coupled L2 penalty added to the gradient of weights (conv and dense W), "
    "not of biases or batch-norm gamma/beta: g = grad + weight_decay * W.",
    0.0,
    minimum=0,
)


def learning_rate(default: float) -> Option:
    return number(
        "Learning rate (a schedule may change it every step).", default, exclusiveMinimum=0
    )


def decay_rate(description: str, default: float) -> Option:
    return number(description, default, minimum=0, exclusiveMaximum=1)


def epsilon(default: float) -> Option:
    return number("Added to the denominator for numerical stability.", default, exclusiveMinimum=0)


class Optimizer(ABC):
    """Base class. Subclasses set ``type_name``, ``options`` and ``slots`` and implement
    ``_update``.

    params: the layers' own arrays, updated in place by ``step``; roles: how each is
    treated (weight decay, trainable; default: trainable, no decay). Frozen parameters are
    left alone and have no state. ``slots`` names the state arrays kept per parameter
    (Adam's "m" and "v").
    """

    type_name: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    slots: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""

    def __init__(
        self,
        params: dict[str, np.ndarray],
        roles: Mapping[str, Role] | None = None,
        **config: Any,
    ) -> None:
        self.config = check_config(f"optimizer '{self.type_name}'", self.options, config)
        roles = roles or dict.fromkeys(params, Role())
        self.keys = params.keys()  # the keys ``step`` expects gradients for
        self.params = {key: p for key, p in params.items() if roles[key].trainable}
        self.lr = self.config["lr"]
        self._t = np.zeros((), dtype=np.int64)
        self._state = {
            slot: {key: np.zeros_like(p) for key, p in self.params.items()} for slot in self.slots
        }
        # Per parameter: (key, p, decayed, g, tmp, state...). g receives the gradient after
        # weight decay and, like tmp, is scratch the update may overwrite.
        decay_on = self.config["weight_decay"] > 0
        self._plan = [
            (
                key,
                p,
                decay_on and roles[key].decay,
                np.empty_like(p),
                np.empty_like(p),
                tuple(self._state[slot][key] for slot in self.slots),
            )
            for key, p in self.params.items()
        ]

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.config.items())
        return f"{type(self).__name__}({options})"

    @property
    def lr(self) -> float:
        """The current learning rate; a schedule sets it before each step."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        # A Python float keeps float32 arithmetic in float32 (numpy scalars would promote).
        self._lr = float(value)

    @property
    def t(self) -> int:
        """Number of steps taken."""
        return int(self._t)

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """Update every trainable parameter in place from ``grads`` (the keys of all the
        parameters given, frozen ones too)."""
        if grads.keys() != self.keys:
            missing = sorted(self.keys - grads.keys())
            extra = sorted(grads.keys() - self.keys)
            raise ValueError(f"gradients do not match parameters: missing {missing}, extra {extra}")
        self._t += 1
        weight_decay = self.config["weight_decay"]
        for key, p, decayed, g, tmp, state in self._plan:
            if decayed:
                np.multiply(p, weight_decay, out=g)
                g += grads[key]
            else:
                np.copyto(g, grads[key])
            self._update(p, g, tmp, *state)

    @abstractmethod
    def _update(self, p: np.ndarray, g: np.ndarray, tmp: np.ndarray, *state: np.ndarray) -> None:
        """Apply one update to ``p``; ``g`` and ``tmp`` are scratch, ``state`` per ``slots``."""

    # --- state for exact resume ----------------------------------------------------------

    def _live_state(self) -> dict[str, np.ndarray]:
        # Every key holds a "/", which "layer.param" keys never do, so the two cannot collide.
        live = {f"{self.type_name}/t": self._t}
        for slot, arrays in self._state.items():
            live.update({f"{self.type_name}/{slot}/{key}": a for key, a in arrays.items()})
        return live

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of all state: ``"<type>/t"`` (0-d int64 step count) and, per slot and
        parameter, ``"<type>/<slot>/<param key>"``, e.g. ``"adam/m/conv1.W"``.
        """
        return {key: value.copy() for key, value in self._live_state().items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore from ``state_dict()`` output; strict about keys, shapes and dtypes.

        Raises CheckpointError naming the key (and both shapes) on any mismatch; nothing
        is changed unless everything matches.
        """
        saved_by = sorted({key.split("/", 1)[0] for key in state})
        if saved_by != [self.type_name]:
            raise CheckpointError(
                f"optimizer state was saved by {', '.join(map(repr, saved_by)) or 'nothing'}, "
                f"not by {self.type_name!r}; use the same optimizer type to resume"
            )
        load_into(self._live_state(), state, f"the {self.type_name} optimizer")


OPTIMIZERS = Registry("optimizer", group="cnnbuild.optimizers")
register = OPTIMIZERS.register


def make_optimizer(
    config: Mapping[str, Any],
    params: dict[str, np.ndarray],
    roles: Mapping[str, Role] | None = None,
) -> Optimizer:
    """Build the optimizer ``config`` names, e.g. ``{"type": "adam", "lr": 0.001}``, over
    ``params`` with their ``roles`` (see ``Optimizer``)."""
    cls, options = OPTIMIZERS.split(config)
    return cls(params, roles, **options)


def optimizer_slots(config: Mapping[str, Any] | None) -> int:
    """How many state arrays per parameter the optimizer ``config`` keeps (Adam: 2; 2 for an
    unknown type, the most any built-in keeps), for memory estimates."""
    kind = (config or {}).get("type", "adam")
    cls = OPTIMIZERS.get(kind) if isinstance(kind, str) else None
    return len(cls.slots) if cls is not None else 2


@register
class SGD(Optimizer):
    """Plain gradient descent, as torch.optim.SGD:

    p -= lr * g
    """

    type_name = "sgd"
    description = "Stochastic gradient descent."
    options: ClassVar[dict[str, Option]] = {"lr": learning_rate(0.01), "weight_decay": WEIGHT_DECAY}

    def _update(self, p: np.ndarray, g: np.ndarray, tmp: np.ndarray) -> None:
        g *= self.lr
        p -= g


@register
class Momentum(Optimizer):
    """Heavy-ball momentum, as torch.optim.SGD(momentum=mu) with dampening 0:

    v = mu * v + g
    p -= lr * v
    """

    type_name = "momentum"
    description = "Gradient descent with (heavy-ball) momentum."
    options: ClassVar[dict[str, Option]] = {
        "lr": learning_rate(0.01),
        "momentum": decay_rate("Momentum factor mu: v = mu * v + g.", 0.9),
        "weight_decay": WEIGHT_DECAY,
    }
    slots = ("v",)

    def _update(self, p: np.ndarray, g: np.ndarray, tmp: np.ndarray, v: np.ndarray) -> None:
        v *= self.config["momentum"]
        v += g
        np.multiply(v, self.lr, out=tmp)
        p -= tmp


@register
class AdaGrad(Optimizer):
    """AdaGrad (Duchi et al.), as torch.optim.Adagrad:

    s += g²
    p -= lr * g / (sqrt(s) + eps)
    """

    type_name = "adagrad"
    description = "AdaGrad: per-element rates shrinking with the sum of squared gradients."
    options: ClassVar[dict[str, Option]] = {
        "lr": learning_rate(0.01),
        "eps": epsilon(1e-8),
        "weight_decay": WEIGHT_DECAY,
    }
    slots = ("sum",)

    def _update(self, p: np.ndarray, g: np.ndarray, tmp: np.ndarray, s: np.ndarray) -> None:
        np.multiply(g, g, out=tmp)
        s += tmp
        np.sqrt(s, out=tmp)
        tmp += self.config["eps"]
        g /= tmp
        g *= self.lr
        p -= g


@register
class RMSProp(Optimizer):
    """RMSProp (Tieleman & Hinton), as torch.optim.RMSprop with alpha=rho (eps outside
    the square root):

        a = rho * a + (1 - rho) * g²
        p -= lr * g / (sqrt(a) + eps)
    """

    type_name = "rmsprop"
    description = "RMSProp: rates scaled by a moving average of squared gradients."
    options: ClassVar[dict[str, Option]] = {
        "lr": learning_rate(0.001),
        "rho": decay_rate("Decay of the moving average of squared gradients.", 0.9),
        "eps": epsilon(1e-8),
        "weight_decay": WEIGHT_DECAY,
    }
    slots = ("square_avg",)

    def _update(self, p: np.ndarray, g: np.ndarray, tmp: np.ndarray, a: np.ndarray) -> None:
        rho = self.config["rho"]
        a *= rho
        np.multiply(g, g, out=tmp)
        tmp *= 1 - rho
        a += tmp
        np.sqrt(a, out=tmp)
        tmp += self.config["eps"]
        g /= tmp
        g *= self.lr
        p -= g


@register
class AdaDelta(Optimizer):
    """AdaDelta (Zeiler), as torch.optim.Adadelta; ``lr`` multiplies the update:

    a = rho * a + (1 - rho) * g²
    d = sqrt(u + eps) / sqrt(a + eps) * g
    u = rho * u + (1 - rho) * d²
    p -= lr * d
    """

    type_name = "adadelta"
    description = "AdaDelta: AdaGrad-like rates in units of past updates."
    options: ClassVar[dict[str, Option]] = {
        "lr": learning_rate(1.0),
        "rho": decay_rate("Decay of the moving averages of g² and of update².", 0.95),
        "eps": epsilon(1e-6),
        "weight_decay": WEIGHT_DECAY,
    }
    slots = ("square_avg", "acc_delta")

    def _update(
        self, p: np.ndarray, g: np.ndarray, tmp: np.ndarray, a: np.ndarray, u: np.ndarray
    ) -> None:
        rho, eps = self.config["rho"], self.config["eps"]
        a *= rho
        np.multiply(g, g, out=tmp)
        tmp *= 1 - rho
        a += tmp
        np.add(a, eps, out=tmp)
        np.sqrt(tmp, out=tmp)
        g /= tmp
        np.add(u, eps, out=tmp)
        np.sqrt(tmp, out=tmp)
        g *= tmp  # g now holds the update d
        u *= rho
        np.multiply(g, g, out=tmp)
        tmp *= 1 - rho
        u += tmp
        g *= self.lr
        p -= g


@register
class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, as torch.optim.Adam; t counts steps from 1:

    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g²
    p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    type_name = "adam"
    description = "Adam: momentum with per-element rates from a moving average of g²."
    options: ClassVar[dict[str, Option]] = {
        "lr": learning_rate(0.001),
        "beta1": decay_rate("Decay of the moving average of gradients (m).", 0.9),
        "beta2": decay_rate("Decay of the moving average of squared gradients (v).", 0.999),
        "eps": epsilon(1e-8),
        "weight_decay": WEIGHT_DECAY,
    }
    slots = ("m", "v")

    def _update(
        self, p: np.ndarray, g: np.ndarray, tmp: np.ndarray, m: np.ndarray, v: np.ndarray
    ) -> None:
        beta1, beta2, t = self.config["beta1"], self.config["beta2"], self.t
        np.subtract(g, m, out=tmp)
        tmp *= 1 - beta1
        m += tmp
        v *= beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - beta2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp /= (1 - beta2**t) ** 0.5
        tmp += self.config["eps"]
        np.divide(m, tmp, out=g)
        g *= self.lr / (1 - beta1**t)
        p -= g
