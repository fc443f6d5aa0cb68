"""A PyTorch model of a cnnbuild spec, for the numerical-truth tests.

The spec is expanded and wired here from the README's rules (repeat blocks, uses of
parametrised blocks, default names, ``inputs``), not by cnnbuild's builder; the weights are
copied in from a cnnbuild network: conv W (F, C/groups, kh, kw) as torch's, dense W
(in, units) transposed, batch norm with torch's momentum = 1 - ours, layer and group norm
gamma and beta as torch's weight and bias. Dropout multiplies by masks set from outside
(``masks``) in training. A frozen batch norm (``trainable: false``) normalises with its
running statistics, as torch's in eval mode.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

INPUT = "input"
NORMS = (torch.nn.BatchNorm1d, torch.nn.LayerNorm, torch.nn.GroupNorm)  # gamma, beta


def pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def substitute(value, args: dict):
    """``value`` with each ``$name`` string replaced by ``args[name]``."""
    if isinstance(value, str) and value.startswith("$"):
        return args[value[1:]]
    if isinstance(value, dict):
        return {key: substitute(item, args) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, args) for item in value]
    return value


def expand(
    items: list[dict], blocks: dict, block_input: str = INPUT, counters: dict | None = None
) -> list[dict]:
    """Layers with repeat blocks and uses of ``blocks`` unrolled; ``inputs`` hold names, or
    None for "the one before"."""
    counters = {} if counters is None else counters
    out: list[dict] = []
    previous: object = block_input
    for item in items:
        if "use" in item:  # a repeat block of the block's layers, `$param`s substituted
            block = blocks[item["use"]]
            args = (block.get("params") or {}) | item
            counters[item["use"]] = counters.get(item["use"], 0) + 1
            item = {
                "repeat": item.get("repeat", 1),
                "name": item.get("name", f"{item['use']}{counters[item['use']]}"),
                "layers": substitute(block["layers"], args),
                "numbered": "repeat" in item,
            }
        elif "repeat" in item:
            counters["block"] = counters.get("block", 0) + 1
        if "repeat" in item:
            prefix = item.get("name", f"block{counters.get('block')}")
            for r in range(1, item["repeat"] + 1):
                inner = expand(item["layers"], blocks, previous, counters)
                block_name = f"{prefix}_{r}" if item.get("numbered", True) else prefix
                renames = {x["name"]: f"{block_name}_{x['name']}" for x in inner if x.get("name")}
                for x in inner:
                    if x.get("name"):
                        x["name"] = renames[x["name"]]
                    x["inputs"] = [
                        renames.get(i, i) if isinstance(i, str) else i for i in x["inputs"]
                    ]
                out += inner
                previous = inner[-1]
            continue
        layer = dict(item)
        given = item.get("inputs")
        layer["inputs"] = [block_input if i == INPUT else i for i in given] if given else [previous]
        out.append(layer)
        previous = layer
    return out


def resolve(items: list[dict], blocks: dict) -> list[dict]:
    """Give unnamed layers ``<type><n>`` (skipping names in use) and turn inputs into names."""
    layers = expand(items, blocks)
    taken = {x["name"] for x in layers if x.get("name")}
    counts: dict[str, int] = {}
    for layer in layers:
        while not layer.get("name"):
            counts[layer["type"]] = counts.get(layer["type"], 0) + 1
            name = f"{layer['type']}{counts[layer['type']]}"
            if name not in taken:
                layer["name"] = name
                taken.add(name)
    for layer in layers:
        layer["inputs"] = [i if isinstance(i, str) else i["name"] for i in layer["inputs"]]
    return layers


class TorchNet(torch.nn.Module):
    """The network of ``spec`` in PyTorch, with a copy of cnnbuild's ``params`` and ``buffers``."""

    def __init__(self, spec: dict, params: dict, buffers: dict) -> None:
        super().__init__()
        self.layers = resolve(spec["layers"], spec.get("blocks", {}))
        self.mods = torch.nn.ModuleDict()
        self.masks: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            name, kind = layer["name"], layer["type"]
            bias = params.get(f"{name}.b")
            if kind == "conv":
                weight = torch.tensor(params[f"{name}.W"])
                kernel, dilation = pair(layer["kernel"]), pair(layer.get("dilation", 1))
                groups = layer.get("groups", 1)
                padding = layer.get("padding", "valid")
                if padding == "same":
                    padding = tuple((k - 1) * d // 2 for k, d in zip(kernel, dilation, strict=True))
                module = torch.nn.Conv2d(
                    weight.shape[1] * groups,
                    weight.shape[0],
                    kernel,
                    stride=pair(layer.get("stride", 1)),
                    padding=0 if padding == "valid" else pair(padding),
                    dilation=dilation,
                    groups=groups,
                    bias=bias is not None,
                )
                module.weight.data = weight
            elif kind == "dense":
                weight = torch.tensor(params[f"{name}.W"])
                module = torch.nn.Linear(*weight.shape, bias=bias is not None)
                module.weight.data = weight.T.contiguous()
            elif kind == "batchnorm":
                gamma = torch.tensor(params[f"{name}.gamma"])
                module = torch.nn.BatchNorm1d(
                    len(gamma), eps=layer.get("eps", 1e-5), momentum=1 - layer.get("momentum", 0.9)
                )
                module.weight.data = gamma
                module.bias.data = torch.tensor(params[f"{name}.beta"])
                module.running_mean.data = torch.tensor(buffers[f"{name}.running_mean"])
                module.running_var.data = torch.tensor(buffers[f"{name}.running_var"])
            elif kind in ("layernorm", "groupnorm"):
                gamma = torch.tensor(params[f"{name}.gamma"])
                eps = layer.get("eps", 1e-5)
                if kind == "layernorm":
                    module = torch.nn.LayerNorm(tuple(gamma.shape), eps=eps)
                else:
                    module = torch.nn.GroupNorm(layer["groups"], len(gamma), eps=eps)
                module.weight.data = gamma
                module.bias.data = torch.tensor(params[f"{name}.beta"])
            else:
                continue
            if kind not in ("batchnorm", "layernorm", "groupnorm") and bias is not None:
                module.bias.data = torch.tensor(bias)
            self.mods[name] = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) -> probabilities (N, classes)."""
        values = {INPUT: x}
        for layer in self.layers:
            values[layer["name"]] = self.apply(layer, [values[i] for i in layer["inputs"]])
        return values[self.layers[-1]["name"]]

    def apply(self, layer: dict, xs: list[torch.Tensor]) -> torch.Tensor:
        kind, x = layer["type"], xs[0]
        module = self.mods[layer["name"]] if layer["name"] in self.mods else None  # noqa: SIM401 (ModuleDict has no get)
        if kind in ("conv", "layernorm", "groupnorm"):
            return module(x)
        if kind == "dense":
            return module(x.flatten(1))
        if kind == "batchnorm":  # per channel for (N, C, H, W), per feature for (N, D)
            return F.batch_norm(
                x,
                module.running_mean,
                module.running_var,
                module.weight,
                module.bias,
                self.training and layer.get("trainable", True),
                module.momentum,
                module.eps,
            )
        if kind in ("maxpool", "avgpool"):
            pool = F.max_pool2d if kind == "maxpool" else F.avg_pool2d  # zeros count in means
            stride = layer.get("stride") or layer["size"]
            return pool(x, layer["size"], stride, layer.get("padding", 0))
        if kind == "global_avgpool":
            return x.mean(dim=(2, 3))
        if kind == "global_maxpool":
            return x.amax(dim=(2, 3))
        if kind == "flatten":
            return x.flatten(1)
        if kind == "dropout":
            return x * self.masks[layer["name"]] if self.training else x
        if kind == "add":
            return sum(xs[1:], xs[0])
        if kind == "concat":
            return torch.cat(xs, dim=1)
        if kind == "multiply":  # a (N, C) input scales the channels of an (N, C, H, W) one
            a, b = xs
            if a.dim() == 2 and b.dim() == 4:
                a = a[:, :, None, None]
            if b.dim() == 2 and a.dim() == 4:
                b = b[:, :, None, None]
            return a * b
        activations = {
            "relu": F.relu,
            "sigmoid": torch.sigmoid,
            "tanh": torch.tanh,
            "softmax": lambda v: F.softmax(v, dim=1),
            "leaky_relu": lambda v: F.leaky_relu(v, layer.get("slope", 0.01)),
            "gelu": F.gelu,  # the exact erf form
            "silu": F.silu,
            "hardswish": F.hardswish,
            "elu": lambda v: F.elu(v, layer.get("alpha", 1.0)),
            "identity": lambda v: v,
        }
        return activations[kind](x)

    def tensors(self) -> dict[str, torch.nn.Parameter]:
        """The trainable tensors under cnnbuild's names: conv1.W, bn1.gamma, ..."""
        out = {}
        for name, module in self.mods.items():
            if isinstance(module, NORMS):
                out[f"{name}.gamma"], out[f"{name}.beta"] = module.weight, module.bias
            else:
                out[f"{name}.W"] = module.weight
                if module.bias is not None:
                    out[f"{name}.b"] = module.bias
        return out

    def ours(self, key: str, value: torch.Tensor) -> np.ndarray:
        """A tensor (a parameter or its gradient) in cnnbuild's layout: dense W transposed."""
        array = value.detach().numpy()
        dense = isinstance(self.mods[key.split(".")[0]], torch.nn.Linear)
        return array.T if dense and key.endswith(".W") else array

    def buffers_as_ours(self) -> dict[str, np.ndarray]:
        return {
            f"{name}.{key}": getattr(module, key).numpy()
            for name, module in self.mods.items()
            if isinstance(module, torch.nn.BatchNorm1d)
            for key in ("running_mean", "running_var")
        }
