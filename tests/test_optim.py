"""Optimizers: update equations, in-place updates, exact resume of their state, no per-step
allocation (agreement with torch.optim is promise 9, tests/test_promise_torch.py)."""

import tracemalloc

import numpy as np
import pytest

from cnnbuild.checkpoint import CheckpointError
from cnnbuild.errors import ConfigError
from cnnbuild.layers.base import Role
from cnnbuild.optim import OPTIMIZERS, Optimizer, make_optimizer, register

# Non-default hyperparameters (a large eps shows where it enters) and weight decay.
CONFIGS = {
    "sgd": {"lr": 0.1, "weight_decay": 0.1},
    "momentum": {"lr": 0.1, "momentum": 0.8, "weight_decay": 0.1},
    "adagrad": {"lr": 0.1, "eps": 0.1, "weight_decay": 0.1},
    "rmsprop": {"lr": 0.1, "rho": 0.7, "eps": 0.1, "weight_decay": 0.1},
    "adadelta": {"lr": 0.5, "rho": 0.7, "eps": 0.1, "weight_decay": 0.1},
    "adam": {"lr": 0.1, "beta1": 0.8, "beta2": 0.9, "eps": 0.1, "weight_decay": 0.1},
}


def reference(type_name, config, p, grads, decay):
    """The update equations of each optimizer, textbook form, float64, out of place."""
    c = {"weight_decay": 0.0, **config}
    p = p.astype(np.float64)
    s1 = np.zeros_like(p)
    s2 = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g + c["weight_decay"] * p if decay else g.astype(np.float64)
        if type_name == "sgd":
            p = p - c["lr"] * g
        elif type_name == "momentum":
            s1 = c["momentum"] * s1 + g
            p = p - c["lr"] * s1
        elif type_name == "adagrad":
            s1 = s1 + g**2
            p = p - c["lr"] * g / (np.sqrt(s1) + c["eps"])
        elif type_name == "rmsprop":
            s1 = c["rho"] * s1 + (1 - c["rho"]) * g**2
            p = p - c["lr"] * g / (np.sqrt(s1) + c["eps"])
        elif type_name == "adadelta":
            s1 = c["rho"] * s1 + (1 - c["rho"]) * g**2
            delta = np.sqrt(s2 + c["eps"]) / np.sqrt(s1 + c["eps"]) * g
            s2 = c["rho"] * s2 + (1 - c["rho"]) * delta**2
            p = p - c["lr"] * delta
        elif type_name == "adam":
            s1 = c["beta1"] * s1 + (1 - c["beta1"]) * g
            s2 = c["beta2"] * s2 + (1 - c["beta2"]) * g**2
            m_hat = s1 / (1 - c["beta1"] ** t)
            v_hat = s2 / (1 - c["beta2"] ** t)
            p = p - c["lr"] * m_hat / (np.sqrt(v_hat) + c["eps"])
    return p


P0 = np.array([1.0, -2.0, 0.5], dtype=np.float32)
G1 = np.array([0.5, 0.25, -1.0], dtype=np.float32)
G2 = np.array([-0.1, 0.4, 2.0], dtype=np.float32)


def make_params(rng=None, shape=(3,)):
    if rng is None:
        return {"fc.W": P0.copy(), "fc.b": P0.copy(), "bn.gamma": P0.copy()}
    return {
        key: rng.standard_normal(shape).astype(np.float32)
        for key in ("conv1.W", "conv1.b", "bn1.gamma", "bn1.beta", "fc.W")
    }


def weights_decay(params):
    """The roles the layers declare: weight decay for weights (W) only."""
    return {key: Role(decay=key.endswith(".W")) for key in params}


def random_grads(params, rng, count):
    return [
        {key: rng.standard_normal(p.shape).astype(np.float32) for key, p in params.items()}
        for _ in range(count)
    ]


@pytest.mark.parametrize("type_name", sorted(CONFIGS))
def test_two_steps_match_the_equations(type_name):
    config = CONFIGS[type_name]
    params = make_params()
    opt = make_optimizer({"type": type_name, **config}, params, weights_decay(params))
    for g in (G1, G2):
        opt.step(dict.fromkeys(params, g))
    for key, decay in (("fc.W", True), ("fc.b", False), ("bn.gamma", False)):
        expected = reference(type_name, config, P0, [G1, G2], decay)
        np.testing.assert_allclose(params[key], expected, rtol=1e-6, atol=1e-7, err_msg=key)


def test_momentum_by_hand():
    params = {"w.W": np.array([1.0], dtype=np.float32)}
    opt = make_optimizer({"type": "momentum", "lr": 0.1, "momentum": 0.9}, params)
    opt.step({"w.W": np.array([0.5], dtype=np.float32)})  # v = 0.5, p = 1 - 0.05
    assert params["w.W"][0] == pytest.approx(0.95)
    opt.step({"w.W": np.array([-0.1], dtype=np.float32)})  # v = 0.45 - 0.1, p = 0.95 - 0.035
    assert params["w.W"][0] == pytest.approx(0.915)


def test_adam_first_step_is_lr_times_sign():
    params = {"w.W": np.array([1.0, 1.0], dtype=np.float32)}
    opt = make_optimizer({"type": "adam", "lr": 0.01}, params)
    opt.step({"w.W": np.array([3.0, -0.2], dtype=np.float32)})
    np.testing.assert_allclose(params["w.W"], [0.99, 1.01], rtol=1e-6)


@pytest.mark.parametrize("type_name", sorted(OPTIMIZERS))
def test_updates_in_place(type_name):
    params = make_params(np.random.default_rng(0))
    arrays = dict(params)
    before = {key: p.copy() for key, p in params.items()}
    opt = make_optimizer({"type": type_name}, params)
    opt.step(random_grads(params, np.random.default_rng(1), 1)[0])
    for key, p in params.items():
        assert p is arrays[key] and opt.params[key] is arrays[key]
        assert not np.array_equal(p, before[key]), key
        assert p.dtype == np.float32


@pytest.mark.parametrize("type_name", sorted(OPTIMIZERS))
def test_weight_decay_only_touches_parameters_whose_role_says_so(type_name):
    params = make_params(np.random.default_rng(0))
    before = {key: p.copy() for key, p in params.items()}
    opt = make_optimizer({"type": type_name, "weight_decay": 0.5}, params, weights_decay(params))
    for _ in range(3):
        opt.step({key: np.zeros_like(p) for key, p in params.items()})
    for key, p in params.items():
        if key.endswith(".W"):
            assert np.all(np.abs(p) < np.abs(before[key])), key
        else:
            np.testing.assert_array_equal(p, before[key], err_msg=key)


@pytest.mark.parametrize("type_name", sorted(OPTIMIZERS))
def test_frozen_parameters_are_left_alone_and_have_no_state(type_name):
    params = make_params(np.random.default_rng(0))
    before = {key: p.copy() for key, p in params.items()}
    roles = {key: Role(trainable=not key.startswith("conv1.")) for key in params}
    opt = make_optimizer({"type": type_name}, params, roles)
    opt.step(random_grads(params, np.random.default_rng(1), 1)[0])
    for key, p in params.items():
        assert np.array_equal(p, before[key]) == key.startswith("conv1."), key
    assert not any("conv1." in key for key in opt.state_dict())


def test_weight_decay_does_not_write_into_the_gradients():
    params = make_params()
    grads = {key: G1.copy() for key in params}
    make_optimizer({"type": "sgd", "weight_decay": 0.5}, params).step(grads)
    for g in grads.values():
        np.testing.assert_array_equal(g, G1)


@pytest.mark.parametrize("type_name", sorted(OPTIMIZERS))
def test_state_round_trip_continues_bit_identically(type_name):
    rng = np.random.default_rng(0)
    params = make_params(rng)
    grads = random_grads(params, rng, 5)
    config = {"type": type_name, **CONFIGS[type_name]}
    opt = make_optimizer(config, params)
    for g in grads[:3]:
        opt.step(g)
    state = opt.state_dict()
    resumed_params = {key: p.copy() for key, p in params.items()}
    for g in grads[3:]:
        opt.step(g)

    resumed = make_optimizer(config, resumed_params)
    resumed.load_state_dict(state)
    assert resumed.t == 3
    for g in grads[3:]:
        resumed.step(g)
    for key in params:
        assert params[key].tobytes() == resumed_params[key].tobytes(), key


@pytest.mark.parametrize("type_name", sorted(OPTIMIZERS))
def test_state_dict_keys_and_copies(type_name):
    params = make_params(np.random.default_rng(0))
    opt = make_optimizer({"type": type_name}, params)
    opt.step(random_grads(params, np.random.default_rng(1), 1)[0])
    state = opt.state_dict()
    assert state[f"{type_name}/t"].shape == ()
    assert state[f"{type_name}/t"].dtype == np.int64 and int(state[f"{type_name}/t"]) == 1
    assert len(state) == 1 + len(OPTIMIZERS[type_name].slots) * len(params)
    for key in state:
        assert key.startswith(f"{type_name}/") and key not in params
    for slot in OPTIMIZERS[type_name].slots:
        for key, p in params.items():
            value = state[f"{type_name}/{slot}/{key}"]
            assert value.shape == p.shape and value.dtype == p.dtype
            value += 1  # a copy: changing it leaves the optimizer alone
    assert opt.state_dict().keys() == state.keys()
    for key, value in opt.state_dict().items():
        if key != f"{type_name}/t":
            assert not np.array_equal(value, state[key])


def test_load_state_dict_is_strict():
    params = {"conv1.W": np.ones((2, 3), np.float32), "conv1.b": np.ones(2, np.float32)}
    opt = make_optimizer({"type": "adam"}, params)
    state = opt.state_dict()

    missing = {k: v for k, v in state.items() if k != "adam/v/conv1.b"}
    with pytest.raises(CheckpointError, match=r"adam/v/conv1\.b"):
        opt.load_state_dict(missing)
    with pytest.raises(CheckpointError, match=r"adam/m/conv9\.W"):
        opt.load_state_dict({**state, "adam/m/conv9.W": np.zeros(2, np.float32)})
    with pytest.raises(
        CheckpointError, match=r"adam/m/conv1\.W: checkpoint has \(3, 2\), .*\(2, 3\)"
    ):
        opt.load_state_dict({**state, "adam/m/conv1.W": np.full((3, 2), 7, np.float32)})
    with pytest.raises(CheckpointError, match="saved by 'momentum'"):
        opt.load_state_dict(make_optimizer({"type": "momentum"}, params).state_dict())
    np.testing.assert_array_equal(opt.state_dict()["adam/m/conv1.W"], 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_keeps_the_parameter_dtype(dtype):
    params = {"fc.W": np.ones(4, dtype)}
    opt = make_optimizer({"type": "adam", "weight_decay": 0.1}, params)
    opt.step({"fc.W": np.ones(4, dtype)})
    assert params["fc.W"].dtype == dtype
    assert all(v.dtype == dtype for k, v in opt.state_dict().items() if k != "adam/t")


def test_step_refuses_mismatched_gradients():
    params = make_params()
    opt = make_optimizer({"type": "sgd"}, params)
    with pytest.raises(ValueError, match=r"missing \['fc\.b'\]"):
        opt.step({"fc.W": G1, "bn.gamma": G1})


def test_lr_can_be_changed_between_steps():
    params = {"w.W": np.array([1.0], np.float32)}
    opt = make_optimizer({"type": "sgd", "lr": 0.1}, params)
    opt.lr = np.float64(0.5)
    assert type(opt.lr) is float
    opt.step({"w.W": np.array([1.0], np.float32)})
    assert params["w.W"][0] == pytest.approx(0.5)


def peak_allocation(fn, repeat=5):
    """Peak bytes allocated above the starting point while calling ``fn`` ``repeat`` times."""
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(repeat):
            fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - start


def test_peak_allocation_sees_numpy_arrays():
    assert peak_allocation(lambda: np.ones(4096, np.float32)) >= 4096 * 4


@pytest.mark.parametrize("type_name", sorted(OPTIMIZERS))
def test_step_allocates_no_arrays(type_name):
    rng = np.random.default_rng(0)
    params = make_params(rng, shape=(4096,))
    grads = random_grads(params, rng, 1)[0]
    opt = make_optimizer({"type": type_name, "weight_decay": 0.01}, params)
    opt.step(grads)
    opt.step(grads)
    # One array is 16 KiB; Python's own bookkeeping (about 1 KiB) stays far below that.
    assert peak_allocation(lambda: opt.step(grads)) < 4096


BOWL_A = np.array([1.0, 10.0, 0.3], dtype=np.float32)
BOWL_C = np.array([3.0, -2.0, 1.0], dtype=np.float32)
BOWL = {
    "sgd": ({"lr": 0.05}, 600),
    "momentum": ({"lr": 0.01, "momentum": 0.9}, 600),
    "adagrad": ({"lr": 1.0}, 600),
    "rmsprop": ({"lr": 0.01}, 1000),
    "adadelta": ({"lr": 1.0, "eps": 1e-3}, 1000),
    "adam": ({"lr": 0.05}, 1000),
}


@pytest.mark.parametrize("type_name", sorted(OPTIMIZERS))
def test_converges_on_a_quadratic_bowl(type_name):
    """f(p) = sum(a * (p - c)²) / 2, with curvatures a from 0.3 to 10."""
    config, steps = BOWL[type_name]
    params = {"bowl.W": np.zeros(3, np.float32)}
    opt = make_optimizer({"type": type_name, **config}, params)
    for _ in range(steps):
        opt.step({"bowl.W": BOWL_A * (params["bowl.W"] - BOWL_C)})
    np.testing.assert_allclose(params["bowl.W"], BOWL_C, atol=0.02)


DEFAULTS = {
    "sgd": {"lr": 0.01, "weight_decay": 0.0},
    "momentum": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0},
    "adagrad": {"lr": 0.01, "eps": 1e-8, "weight_decay": 0.0},
    "rmsprop": {"lr": 0.001, "rho": 0.9, "eps": 1e-8, "weight_decay": 0.0},
    "adadelta": {"lr": 1.0, "rho": 0.95, "eps": 1e-6, "weight_decay": 0.0},
    "adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
}


def test_defaults_are_those_the_readme_lists():
    assert sorted(OPTIMIZERS) == sorted(DEFAULTS)
    for type_name, defaults in DEFAULTS.items():
        opt = make_optimizer({"type": type_name}, make_params())
        assert opt.config == defaults
        assert opt.lr == defaults["lr"]


def test_registering_a_type_twice_is_refused():
    class Again(Optimizer):
        type_name = "sgd"

    with pytest.raises(TypeError, match="registered twice"):
        register(Again)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "adam", "lr": -1}, r"optimizer 'adam': received lr=-1"),
        ({"type": "adam", "lr": 0}, r"received lr=0"),
        ({"type": "sgd", "lr": "fast"}, r"received lr='fast'"),
        ({"type": "adam", "beta1": 1.5}, r"received beta1=1\.5"),
        ({"type": "rmsprop", "eps": 0}, r"received eps=0"),
        ({"type": "momentum", "weight_decay": -0.1}, r"received weight_decay=-0\.1"),
        ({"type": "sgd", "momentum": 0.9}, r"unknown option 'momentum'; known options: lr, wei"),
        ({"type": "adm"}, r"unknown type 'adm' — did you mean 'adam'\?; known types: adadelta"),
        ({"lr": 0.1}, r"'type' is required; known types: adadelta, adagrad, adam, momentum"),
        (["adam"], r"expected a mapping"),
    ],
)
def test_bad_config_is_refused(config, message):
    with pytest.raises(ConfigError, match=message):
        make_optimizer(config, make_params())


@pytest.mark.parametrize("type_name", ["adam", "momentum"])
def test_the_fast_engines_updates_match_the_equations(type_name, fast_engine):
    """The compiled one-pass updates follow the same equations, weight decay included."""
    config = CONFIGS[type_name]
    params = make_params()
    opt = make_optimizer({"type": type_name, **config}, params, weights_decay(params))
    opt.__class__ = fast_engine.FAST_OPTIMIZERS[type(opt)]
    for g in (G1, G2):
        opt.step(dict.fromkeys(params, g))
    for key, decay in (("fc.W", True), ("fc.b", False), ("bn.gamma", False)):
        expected = reference(type_name, config, P0, [G1, G2], decay)
        np.testing.assert_allclose(params[key], expected, rtol=1e-6, atol=1e-7, err_msg=key)
