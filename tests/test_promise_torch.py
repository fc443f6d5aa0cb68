"""Promise 9: every layer type, every file in archs/ and every optimizer give what PyTorch
gives with the same weights: forward within 1e-5, gradients within 1e-4 (float32).

Errors are relative to the largest value of each tensor, floored at 1/1000 of the largest
value in the network, so that gradients which are zero in exact arithmetic (a bias feeding a
batch norm in training) are compared at the network's scale. Skipped without torch."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ARCHS
from promises import record
from test_optim import CONFIGS

import cnnbuild
from cnnbuild.layers.base import Role
from cnnbuild.optim import make_optimizer

torch = pytest.importorskip("torch")
from torch_reference import TorchNet  # noqa: E402 (needs torch)

torch.set_num_threads(
    1
)  # tensors this small only lose time to threads, the more so on a busy machine

FORWARD, GRADIENT = 1e-5, 1e-4
WORST: dict[str, float] = {}

LAYER_SPECS = {
    "conv, pools, activations": """\
name: a
input: [3, 11, 10]
classes: 4
layers:
  - {name: c1, type: conv, filters: 5, kernel: 3, padding: same}
  - {type: leaky_relu, slope: 0.2}
  - {name: c2, type: conv, filters: 4, kernel: 4, stride: 2, padding: 1, bias: false}
  - {type: tanh}
  - {type: maxpool, size: 3, stride: 1}
  - {name: c3, type: conv, filters: 6, kernel: 1, stride: 2}
  - {type: sigmoid}
  - {type: avgpool, size: 2}
  - {type: dense, units: 4}
  - {type: softmax}
""",
    "batch norm, dropout, dense": """\
name: b
input: [2, 8, 8]
classes: 3
layers:
  - {name: c1, type: conv, filters: 4, kernel: 3, bias: false, init: xavier}
  - {type: batchnorm, momentum: 0.8, eps: 0.001}
  - {type: relu}
  - {type: avgpool, size: 3, stride: 2}
  - {type: flatten}
  - {type: dense, units: 7, bias: false}
  - {type: batchnorm}
  - {type: dropout, rate: 0.3}
  - {type: dense, units: 3, init: normal}
  - {type: softmax}
""",
    "add, concat, repeat, global pool": """\
name: c
input: [2, 6, 6]
classes: 3
layers:
  - {name: stem, type: conv, filters: 3, kernel: 3, padding: same}
  - repeat: 2
    name: res
    layers:
      - {name: conv, type: conv, filters: 3, kernel: 3, padding: same}
      - {name: sum, type: add, inputs: [conv, input]}
  - {name: side, type: conv, filters: 2, kernel: 1, inputs: [stem]}
  - {name: cat, type: concat, inputs: [res_2_sum, side, stem]}
  - {type: global_avgpool}
  - {type: dense, units: 3}
  - {type: softmax}
""",
    "grouped, dilated, normalisations, activations, squeeze-excitation, frozen": """\
name: d
input: [4, 10, 9]
classes: 3
layers:
  - {name: stem, type: conv, filters: 6, kernel: [3, 2], stride: [1, 2], padding: [1, 0]}
  - {type: groupnorm, groups: 3}
  - {type: hardswish}
  - {name: dw, type: conv, filters: 6, kernel: 3, groups: 6, padding: same, dilation: 2}
  - {type: batchnorm, trainable: false}
  - {type: gelu}
  - {name: pw, type: conv, filters: 8, kernel: 1, groups: 2, trainable: false}
  - {type: layernorm, eps: 0.001}
  - {type: silu}
  - {name: mp, type: maxpool, size: 3, stride: 2, padding: 1}
  - {name: squeeze, type: global_avgpool}
  - {name: excite, type: dense, units: 8}
  - {name: gate, type: sigmoid}
  - {name: scaled, type: multiply, inputs: [mp, gate]}
  - {type: elu, alpha: 0.7}
  - {type: avgpool, size: 3, stride: 1, padding: 1}
  - {name: id, type: identity}
  - {name: gmax, type: global_maxpool}
  - {name: gavg, type: global_avgpool, inputs: [id]}
  - {name: both, type: multiply, inputs: [gavg, gmax]}
  - {type: groupnorm, groups: 2}
  - {type: dense, units: 3}
  - {type: softmax}
""",
}


def error(ours: np.ndarray, theirs: np.ndarray, scale: float) -> float:
    """max |ours - theirs| relative to the tensor's largest value (floored at ``scale``)."""
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), scale, 1e-30))


def note(what: str, value: float) -> None:
    WORST[what] = max(WORST.get(what, 0.0), value)
    record(9, what, f"{WORST[what]:.1e}")


def zero_in_training(net) -> set[str]:
    """Biases whose layer feeds only (trained) batch norms: their gradient is zero while
    training."""
    consumers: dict[str, set[str]] = {}
    for node in net.nodes:
        layer = node.layer
        kind = "frozen" if not layer.config.get("trainable", True) else layer.type_name
        for name in node.inputs:
            consumers.setdefault(name, set()).add(kind)
    return {f"{n.name}.b" for n in net.nodes if consumers.get(n.name) == {"batchnorm"}} & set(
        net.params
    )


def share_dropout_masks(net, model, n: int) -> None:
    """Give the torch model the masks our dropout layers drew: backward(ones) is the mask."""
    for node in net.nodes:
        if node.layer.type_name == "dropout":
            ones = np.ones((n, *node.output_shape), np.float32)
            (mask,) = node.layer.backward(ones)
            model.masks[node.name] = torch.tensor(mask)


def compare(net, model, x: np.ndarray, labels: np.ndarray, train: bool) -> dict[str, float]:
    """Forward and backward through both; the worst errors of outputs, gradients, statistics."""
    model.train(train)
    probs = net.forward(x, train=train)
    share_dropout_masks(net, model, len(x))
    n = len(x)
    dprobs = np.zeros_like(probs)
    dprobs[np.arange(n), labels] = -1 / (n * probs[np.arange(n), labels])
    dx = net.backward(dprobs)
    xt = torch.tensor(x, requires_grad=True)
    theirs = model(xt)
    torch.nn.functional.nll_loss(torch.log(theirs), torch.tensor(labels)).backward()
    grads = {key: model.ours(key, t.grad) for key, t in model.tensors().items()}
    assert grads.keys() == net.grads.keys()
    scale = 1e-3 * max(np.abs(g).max() for g in grads.values())
    zero = zero_in_training(net) if train else set()
    for key in zero:  # both zero, to float32 precision at the network's scale
        assert max(np.abs(net.grads[key]).max(), np.abs(grads[key]).max()) < 1e-3 * scale, key
    result = {
        "forward": error(probs, theirs.detach().numpy(), 0),
        "gradients": max(error(net.grads[k], g, scale) for k, g in grads.items() if k not in zero),
        "input gradient": error(dx, xt.grad.numpy(), 0),
    }
    if train and net.buffers:
        stats = model.buffers_as_ours()
        result["statistics"] = max(error(net.buffers[k], v, 0) for k, v in stats.items())
    return result


def check(net, x, labels, train: bool, label: str) -> None:
    model = TorchNet(net.spec, net.params, net.buffers)
    errors = compare(net, model, x, labels, train)
    mode = "training" if train else "inference"
    for what, value in errors.items():
        note(f"{label}, {mode}: worst {what} error", value)
    assert errors["forward"] < FORWARD, errors
    assert errors["gradients"] < GRADIENT and errors["input gradient"] < GRADIENT, errors
    assert errors.get("statistics", 0) < FORWARD, errors


def batch(net, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *net.input_shape)).astype(np.float32)
    return x, rng.integers(0, net.classes, n)


@pytest.mark.parametrize("train", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("name", list(LAYER_SPECS))
def test_every_layer_type_matches_pytorch(name, train):
    net = cnnbuild.loads(LAYER_SPECS[name], seed=1)
    x, labels = batch(net, 4, 2)
    check(net, x, labels, train, "layer types")


def test_the_layer_specs_cover_every_layer_type():
    from cnnbuild.layers import REGISTRY

    used = {
        node.layer.type_name for text in LAYER_SPECS.values() for node in cnnbuild.loads(text).nodes
    }
    assert used == set(REGISTRY), set(REGISTRY) - used
    record(9, "layer types compared", f"all {len(used)}: {', '.join(sorted(used))}")


@pytest.mark.slow
@pytest.mark.parametrize("train", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("path", ARCHS, ids=[p.stem for p in ARCHS])
def test_every_architecture_file_matches_pytorch(path, train):
    net = cnnbuild.load(path, seed=3)
    x, labels = batch(net, 8, 4)
    check(net, x, labels, train, "archs/*.yaml")


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


def torch_optimizer(kind: str, tensors: dict, ours, weight_decay: float):
    """torch.optim with two groups: weight decay only on keys ending in '.W' (conv and dense
    weights), as our layers declare in their roles."""
    decayed = [t for k, t in tensors.items() if k.endswith(".W")]
    others = [t for k, t in tensors.items() if not k.endswith(".W")]
    groups = [{"params": decayed, "weight_decay": weight_decay}, {"params": others}]
    return TORCH_OPTIMIZERS[kind](groups, ours.config)


def train_both(path, kind: str, steps: int, weight_decay: float = 0.0) -> dict[str, float]:
    """``steps`` training steps in both libraries; worst parameter and statistic errors."""
    net = cnnbuild.load(path, seed=5)
    model = TorchNet(net.spec, net.params, net.buffers)
    config = {"type": kind, "weight_decay": weight_decay}
    if kind in ("sgd", "momentum"):
        config["lr"] = 0.05
    ours = make_optimizer(config, net.params, net.roles)
    theirs = torch_optimizer(kind, model.tensors(), ours, weight_decay)
    model.train()
    for step in range(steps):
        x, labels = batch(net, 8, 10 + step)
        net.forward(x, train=True)
        share_dropout_masks(net, model, len(x))
        net.backward_loss(labels)
        ours.step(net.grads)
        theirs.zero_grad()
        loss = torch.nn.functional.nll_loss(torch.log(model(torch.tensor(x))), torch.tensor(labels))
        loss.backward()
        theirs.step()
    tensors = {k: model.ours(k, t) for k, t in model.tensors().items()}
    zero = zero_in_training(net)  # their updates follow float32 noise (Adam: its sign)
    scale = 1e-3 * max(np.abs(v).max() for v in tensors.values())
    stats = model.buffers_as_ours()
    return {
        "parameters": max(
            error(net.params[k], v, scale) for k, v in tensors.items() if k not in zero
        ),
        "statistics": max((error(net.buffers[k], v, 0) for k, v in stats.items()), default=0),
    }


@pytest.mark.slow
def test_batch_norm_statistics_after_several_steps_and_one_adam_step():
    path = next(p for p in ARCHS if p.stem == "mnist")
    several = train_both(path, "momentum", 3)
    adam = train_both(path, "adam", 1)
    note("archs/mnist.yaml, 3 momentum steps: worst parameter error", several["parameters"])
    note("archs/mnist.yaml, 3 momentum steps: worst running-statistic error", several["statistics"])
    note("archs/mnist.yaml, 1 Adam step: worst parameter error", adam["parameters"])
    assert several["parameters"] < GRADIENT and several["statistics"] < FORWARD
    assert adam["parameters"] < GRADIENT and adam["statistics"] < FORWARD


@pytest.mark.slow  # the first torch.optim costs seconds (torch._dynamo)
@pytest.mark.parametrize("settings", ["defaults", "weight decay", "configured"])
@pytest.mark.parametrize("kind", list(TORCH_OPTIMIZERS))
def test_every_optimizer_follows_torch_optim(kind, settings):
    """Five steps from the same gradients: the same parameters and state, with the default
    hyperparameters, with weight decay, and with every hyperparameter set otherwise."""
    config = {
        "defaults": {},
        "weight decay": {"weight_decay": 0.01},
        "configured": CONFIGS[kind],  # a large eps shows where it enters
    }[settings]
    rng = np.random.default_rng(7)
    params = {
        "conv1.W": rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
        "conv1.b": rng.standard_normal(3).astype(np.float32),
        "bn1.gamma": rng.standard_normal(3).astype(np.float32),
    }
    roles = {"conv1.W": Role(decay=True), "conv1.b": Role(), "bn1.gamma": Role()}
    tensors = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in params.items()}
    ours = make_optimizer({"type": kind, **config}, params, roles)
    theirs = torch_optimizer(kind, tensors, ours, ours.config["weight_decay"])
    for _ in range(5):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
        ours.step(grads)
        for key, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[key])
        theirs.step()
    worst = max(error(params[k], t.detach().numpy(), 0) for k, t in tensors.items())
    note(
        "6 optimizers x defaults / weight decay / other settings, 5 steps: worst parameter error",
        worst,
    )
    assert worst < FORWARD


ACTIVATIONS = {
    "gelu": ({}, torch.nn.functional.gelu),  # approximate="none": the erf form
    "silu": ({}, torch.nn.functional.silu),
    "hardswish": ({}, torch.nn.functional.hardswish),
    "elu": ({"alpha": 0.7}, lambda v: torch.nn.functional.elu(v, 0.7)),
}


@pytest.mark.parametrize("type_name", list(ACTIVATIONS))
def test_activations_match_pytorch_in_float64(type_name):
    """Values and gradients over [-12, 12] (every piece of hardswish, the tails of gelu)."""
    from cnnbuild.layers import layer_class

    config, theirs = ACTIVATIONS[type_name]
    x = np.linspace(-12, 12, 4801).reshape(1, -1) + 1e-4  # off hardswish's kinks at -3, 3
    layer = layer_class(type_name)("a", **config)
    xt = torch.tensor(x, requires_grad=True)
    expected = theirs(xt)
    expected.sum().backward()
    forward = np.abs(layer.forward([x]) - expected.detach().numpy()).max()
    (dx,) = layer.backward(np.ones_like(x))
    backward = np.abs(dx - xt.grad.numpy()).max()
    note(
        "gelu, silu, hardswish, elu in float64: worst value or gradient error",
        max(forward, backward),
    )
    assert forward < 1e-12 and backward < 1e-12, (forward, backward)
