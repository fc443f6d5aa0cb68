"""A cnnbuild network rebuilt in PyTorch, layer for layer, for side-by-side benchmarks.

``TorchNet(net)`` walks the built graph (so repeats, names and ``inputs`` are already
resolved), maps every layer type to a ``torch.nn`` module and copies the weights, so both
networks compute the same function. The softmax output is left out: ``forward`` returns
logits, which ``torch.nn.functional.cross_entropy`` expects.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnbuild.graph import INPUT, Network, Node
from cnnbuild.optim import Optimizer


def _module(node: Node) -> nn.Module:
    """The torch module computing ``node``'s layer (merge layers are done in ``forward``)."""
    layer, config = node.layer, node.layer.config
    kind = layer.type_name
    if kind == "conv":
        return nn.Conv2d(
            node.input_shapes[0][0],
            config["filters"],
            layer.kernel,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            bias=config["bias"],
        )
    if kind == "dense":
        features = int(np.prod(node.input_shapes[0]))
        return nn.Sequential(nn.Flatten(), nn.Linear(features, config["units"], config["bias"]))
    if kind == "batchnorm":
        norm = nn.BatchNorm2d if len(node.input_shapes[0]) == 3 else nn.BatchNorm1d
        # torch's momentum weighs the new statistics, ours the old ones.
        return norm(node.output_shape[0], eps=config["eps"], momentum=1 - config["momentum"])
    if kind in ("maxpool", "avgpool"):
        pool = nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d
        return pool(layer.kernel, layer.stride, layer.padding)
    simple = {
        "relu": lambda: nn.ReLU(),
        "leaky_relu": lambda: nn.LeakyReLU(config["slope"]),
        "sigmoid": lambda: nn.Sigmoid(),
        "tanh": lambda: nn.Tanh(),
        "dropout": lambda: nn.Dropout(config.get("rate", 0.5)),
        "flatten": lambda: nn.Flatten(),
        "global_avgpool": lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        "add": lambda: nn.Identity(),
        "concat": lambda: nn.Identity(),
        "softmax": lambda: nn.Identity(),
    }
    if kind not in simple:
        raise ValueError(f"no torch translation for layer type {kind!r}")
    return simple[kind]()


class TorchNet(nn.Module):
    """The same graph as ``net`` in torch; ``forward`` returns the logits (N, classes)."""

    def __init__(self, net: Network) -> None:
        super().__init__()
        nodes = [node for node in net.nodes if node.layer.type_name != "softmax"]
        self.inputs = [node.inputs for node in nodes]
        self.names = [node.name for node in nodes]
        self.kinds = [node.layer.type_name for node in nodes]
        self.steps = nn.ModuleList(_module(node) for node in nodes)
        self.output = net.output.inputs[0]
        with torch.no_grad():
            for node, module in zip(nodes, self.steps, strict=True):
                _copy_weights(node, module)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Weights of convolutions and linear layers, which take ``weight_decay``, then the
        rest, which does not (as cnnbuild's layers declare: ``Role.decay`` for conv and dense
        W only)."""
        weights = [m.weight for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        chosen = {id(w) for w in weights}
        rest = [p for p in self.parameters() if id(p) not in chosen]
        return [
            {"params": weights, "weight_decay": weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {INPUT: x}
        for names, name, kind, module in zip(
            self.inputs, self.names, self.kinds, self.steps, strict=True
        ):
            xs = [values[n] for n in names]
            if kind == "add":
                values[name] = sum(xs[1:], xs[0])
            elif kind == "concat":
                values[name] = torch.cat(xs, dim=1)
            else:
                values[name] = module(xs[0])
        return values[self.output]


def _copy_weights(node: Node, module: nn.Module) -> None:
    layer = node.layer
    params = {
        key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in layer.params.items()
    }
    kind = layer.type_name
    if kind == "conv":
        module.weight.copy_(params["W"])
        if "b" in params:
            module.bias.copy_(params["b"])
    elif kind == "dense":
        linear = module[1]
        linear.weight.copy_(params["W"].T)
        if "b" in params:
            linear.bias.copy_(params["b"])
    elif kind == "batchnorm":
        module.weight.copy_(params["gamma"])
        module.bias.copy_(params["beta"])
        module.running_mean.copy_(torch.from_numpy(layer.buffers["running_mean"]))
        module.running_var.copy_(torch.from_numpy(layer.buffers["running_var"]))


# torch.optim's equivalent of each cnnbuild optimizer, from its resolved config.
TORCH_OPTIMIZERS = {
    "sgd": lambda groups, c: torch.optim.SGD(groups, lr=c["lr"]),
    "momentum": lambda groups, c: torch.optim.SGD(groups, lr=c["lr"], momentum=c["momentum"]),
    "adagrad": lambda groups, c: torch.optim.Adagrad(groups, lr=c["lr"], eps=c["eps"]),
    "rmsprop": lambda groups, c: torch.optim.RMSprop(
        groups, lr=c["lr"], alpha=c["rho"], eps=c["eps"]
    ),
    "adadelta": lambda groups, c: torch.optim.Adadelta(
        groups, lr=c["lr"], rho=c["rho"], eps=c["eps"]
    ),
    "adam": lambda groups, c: torch.optim.Adam(
        groups, lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"]
    ),
}


def torch_optimizer(ours: Optimizer, model: TorchNet) -> torch.optim.Optimizer:
    """The torch.optim equivalent of a built cnnbuild optimizer, over ``model``'s parameters
    (its defaults filled in, so none is restated here)."""
    groups = model.parameter_groups(ours.config["weight_decay"])
    return TORCH_OPTIMIZERS[ours.type_name](groups, ours.config)
