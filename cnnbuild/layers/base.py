"""The layer protocol, the option declarations every layer shares, and the type registry.

Each layer class declares its YAML keys once, in ``options``; the JSON Schema, the
constructor checks and ``get_config`` are all derived from that declaration.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from cnnbuild.options import Option, Registry, boolean, check_config, choice

Shape = tuple[int, ...]

INIT = choice(
    ["he", "xavier", "normal"],
    "Weight initialisation: he, normal with std sqrt(2/fan_in); xavier, uniform in "
    "±sqrt(6/(fan_in+fan_out)); normal, normal with std 1/sqrt(fan_in) as in the report.",
    "he",
)
TRAINABLE = boolean(
    "Train this layer's parameters; false freezes them (the optimizer leaves them as they "
    "are; a frozen batchnorm also normalises with its running statistics while training).",
    True,
)


@dataclass(frozen=True)
class Role:
    """How the optimizer treats a parameter array."""

    decay: bool = False  # weight decay applies (weights; not biases or norm scales)
    trainable: bool = True  # the optimizer updates it (False: frozen)


class Layer(ABC):
    """Base class. Subclasses set ``type_name`` and ``options`` and implement the maths.

    Every layer has one signature, whether it merges inputs or not: it receives lists.
    ``output_shape(input_shapes)`` (pure, per-sample shapes), ``parameter_shapes`` and
    ``buffer_shapes`` (what ``build`` will allocate, computed without allocating),
    ``build(input_shapes, rng)`` (allocates ``params`` with their ``roles``, ``grads`` and
    ``buffers``), ``training_scratch`` (values per image kept for backward besides the
    output, for memory estimates),
    ``forward(xs, train)`` caching what ``backward(dy)`` needs, and ``backward`` returning
    one gradient per input and filling ``grads`` (``backward_params`` only fills ``grads``).
    ``arity`` is the (least, most) number of inputs; None: no limit.

    Results may share memory with arguments: identity-like layers return their input (dropout
    at test time), ``flatten`` and ``concat`` return views, ``add`` returns ``dy`` itself once
    per input, and a conv's output is a transposed view. Callers therefore never write into
    what a layer returns (sum gradients with ``a + b``, not ``+=``), and layers never write
    into their arguments. Results need not be C-contiguous.
    """

    type_name: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    arity: ClassVar[tuple[int, int | None]] = (1, 1)
    description: ClassVar[str] = ""

    def __init__(self, name: str | None = None, **config: Any) -> None:
        self.name = name or self.type_name
        self.config = check_config(f"{self.type_name} '{self.name}'", self.options, config)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.roles: dict[str, Role] = {}
        self.buffers: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.config.items())
        return f"{type(self).__name__}({self.name!r}, {options})"

    def get_config(self) -> dict[str, Any]:
        """The mapping that rebuilds this layer: ``{name, type, **options}``."""
        return {"name": self.name, "type": self.type_name, **self.config}

    # --- shapes and cost -------------------------------------------------------------------

    def output_shape(self, input_shapes: list[Shape]) -> Shape:
        """Per-sample output shape; raises ShapeError showing the arithmetic."""
        return input_shapes[0]

    def macs(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """Multiply-adds per image of the forward pass."""
        return 0

    def training_scratch(self, input_shapes: list[Shape], output_shape: Shape) -> int:
        """Values per image that a training forward keeps for backward besides its output
        (a conv's im2col columns, batch norm's normalised input); for memory estimates."""
        return 0

    def inference_scratch(
        self, input_shapes: list[Shape], output_shape: Shape, batch_size: int
    ) -> int:
        """Values that a forward pass at test time over ``batch_size`` images keeps besides
        its output; by default as much as training keeps."""
        return batch_size * self.training_scratch(input_shapes, output_shape)

    # --- parameters ------------------------------------------------------------------------

    def parameter_shapes(self, input_shapes: list[Shape]) -> dict[str, Shape]:
        """The shapes of the trainable arrays ``build`` allocates for these inputs, computed
        without allocating them (summary and validation use this; nothing is built).

        Layers with weights override it together with ``build``. The default is right for
        layers that do not override ``build`` ({}); for a layer that only defines ``build``
        (a plugin) it builds a throwaway copy and reads its shapes, which allocates.
        """
        return dict(self._shapes_from_build(input_shapes)[0])

    def buffer_shapes(self, input_shapes: list[Shape]) -> dict[str, Shape]:
        """The shapes of the non-trainable arrays (``buffers``) ``build`` allocates, without
        allocating them; the default is as for ``parameter_shapes``."""
        return dict(self._shapes_from_build(input_shapes)[1])

    def _shapes_from_build(self, input_shapes: list[Shape]) -> tuple[dict, dict]:
        """(parameter shapes, buffer shapes) of a throwaway copy built for ``input_shapes``
        (remembered for the last input shapes asked about); nothing for a layer whose
        ``build`` is the base class's no-op."""
        if type(self).build is Layer.build:
            return {}, {}
        key = tuple(tuple(shape) for shape in input_shapes)
        cached = self.__dict__.get("_built_shapes")
        if cached is None or cached[0] != key:
            twin = copy.copy(self)
            twin.params, twin.grads, twin.roles, twin.buffers = {}, {}, {}, {}
            twin.build(list(key), np.random.default_rng(0), np.float32)
            shapes = (
                {name: tuple(array.shape) for name, array in twin.params.items()},
                {name: tuple(array.shape) for name, array in twin.buffers.items()},
            )
            cached = self._built_shapes = (key, shapes)
        return cached[1]

    def build(  # noqa: B027 (a no-op for layers without parameters)
        self, input_shapes: list[Shape], rng: np.random.Generator, dtype=np.float32
    ) -> None:
        """Allocate ``params`` (with ``add_param``) and ``buffers`` in ``dtype``, of the shapes
        ``parameter_shapes`` and ``buffer_shapes`` give."""

    def add_param(self, key: str, value: np.ndarray, *, decay: bool = False) -> None:
        """Add a parameter array and its gradient; ``decay``: weight decay applies to it.
        It is trainable unless the layer's ``trainable`` option (TRAINABLE) is false.

        ``backward`` overwrites ``grads`` in place, so references to these arrays (the
        network's flat dicts, an optimizer's) stay valid.
        """
        self.params[key] = value
        self.grads[key] = np.zeros_like(value)
        self.roles[key] = Role(decay=decay, trainable=self.config.get("trainable", True))

    def freeze(self) -> None:
        """Keep every parameter as it is: the optimizer no longer updates them."""
        self.roles = {key: Role(role.decay, trainable=False) for key, role in self.roles.items()}

    # --- computation -----------------------------------------------------------------------

    @abstractmethod
    def forward(self, xs: list[np.ndarray], train: bool = False) -> np.ndarray:
        """xs: one (N, *input_shape) array per input -> (N, *output_shape); cache what
        backward needs."""

    @abstractmethod
    def backward(self, dy: np.ndarray) -> list[np.ndarray]:
        """dy: gradient of the loss w.r.t. the output -> one gradient per input."""

    def backward_params(self, dy: np.ndarray) -> None:
        """Fill ``grads`` from dy when no gradient w.r.t. the input is wanted (the layer
        reads the network's input); layers whose dx costs much skip computing it."""
        if self.params:
            self.backward(dy)


REGISTRY = Registry("layer", group="cnnbuild.layers")
register = REGISTRY.register
layer_class = REGISTRY.lookup
