"""Learning-rate schedules: values at the steps that matter, purity, config checks."""

import math

import pytest

from cnnbuild.errors import ConfigError
from cnnbuild.schedules import make_schedule

BASE = 0.1
STEPS_PER_EPOCH = 10
EPOCHS = 10


def schedule(config, base_lr=BASE, epochs=EPOCHS):
    return make_schedule(config, base_lr, STEPS_PER_EPOCH, epochs)


def test_constant():
    s = schedule({"type": "constant"})
    assert [s.lr_at(step) for step in (0, 1, 50, 99, 500)] == [BASE] * 5
    assert type(s.lr_at(0)) is float


def test_warm_up_climbs_linearly_to_the_base_rate():
    s = schedule({"type": "constant", "warmup_epochs": 2})
    assert s.lr_at(0) == pytest.approx(BASE / 20)
    assert s.lr_at(9) == pytest.approx(BASE / 2)
    assert s.lr_at(19) == pytest.approx(BASE)
    assert s.lr_at(20) == BASE
    rates = [s.lr_at(step) for step in range(20)]
    assert rates == sorted(rates) and len(set(rates)) == 20


def test_step_decays_at_epoch_boundaries():
    s = schedule({"type": "step", "step_epochs": 3, "gamma": 0.5})
    assert s.lr_at(0) == BASE
    assert s.lr_at(29) == BASE
    assert s.lr_at(30) == pytest.approx(BASE * 0.5)
    assert s.lr_at(59) == pytest.approx(BASE * 0.5)
    assert s.lr_at(60) == pytest.approx(BASE * 0.25)
    assert s.lr_at(99) == pytest.approx(BASE * 0.125)


def test_step_default_gamma_and_warm_up():
    s = schedule({"type": "step", "step_epochs": 4, "warmup_epochs": 1})
    assert s.config["gamma"] == 0.1
    assert s.lr_at(0) == pytest.approx(BASE / 10)
    assert s.lr_at(10) == BASE
    assert s.lr_at(40) == pytest.approx(BASE * 0.1)


def test_cosine_key_points():
    s = schedule({"type": "cosine", "min_lr": 0.001})
    assert s.lr_at(0) == BASE
    assert s.lr_at(50) == pytest.approx((BASE + 0.001) / 2)
    assert s.lr_at(25) == pytest.approx(0.001 + (BASE - 0.001) * (1 + math.cos(math.pi / 4)) / 2)
    assert 0.001 < s.lr_at(99) < 0.0011
    assert s.lr_at(100) == pytest.approx(0.001)
    assert s.lr_at(150) == pytest.approx(0.001)
    rates = [s.lr_at(step) for step in range(120)]
    assert rates == sorted(rates, reverse=True)


def test_cosine_after_warm_up_and_default_min_lr():
    s = schedule({"type": "cosine", "warmup_epochs": 2})
    assert s.lr_at(0) == pytest.approx(BASE / 20)
    assert s.lr_at(19) == pytest.approx(BASE)
    assert s.lr_at(20) == BASE
    assert s.lr_at(60) == pytest.approx(BASE / 2)
    assert s.lr_at(100) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "config",
    [
        {"type": "constant", "warmup_epochs": 3},
        {"type": "step", "step_epochs": 2, "warmup_epochs": 1},
        {"type": "cosine", "warmup_epochs": 2, "min_lr": 0.01},
    ],
)
def test_rate_is_a_pure_function_of_the_step(config):
    used = schedule(config)
    forward = [used.lr_at(step) for step in range(100)]
    backward = [used.lr_at(step) for step in reversed(range(100))][::-1]
    fresh = schedule(config)
    assert forward == backward == [fresh.lr_at(step) for step in range(100)]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "cosin"}, r"unknown type 'cosin' — did you mean 'cosine'\?; known types: co"),
        ({}, r"schedule: 'type' is required"),
        ({"type": "step"}, r"schedule 'step': option 'step_epochs' is required"),
        ({"type": "step", "step_epochs": 0}, r"received step_epochs=0"),
        ({"type": "step", "step_epochs": 2.5}, r"received step_epochs=2\.5"),
        ({"type": "step", "step_epochs": 2, "gamma": 0}, r"received gamma=0"),
        ({"type": "step", "step_epochs": 2, "gamma": 2}, r"received gamma=2"),
        ({"type": "constant", "warmup_epochs": 1.5}, r"received warmup_epochs=1\.5"),
        ({"type": "constant", "warmup_epochs": -1}, r"received warmup_epochs=-1"),
        ({"type": "constant", "warmup_epochs": 10}, r"received warmup_epochs=10, .* of the 10"),
        ({"type": "cosine", "min_lr": 0.5}, r"received min_lr=0\.5, above the optimizer's lr"),
        ({"type": "cosine", "min_lr": -0.1}, r"received min_lr=-0\.1"),
        ({"type": "constant", "gamma": 0.5}, r"unknown option 'gamma'; known options: warmup"),
    ],
)
def test_bad_config_is_refused(config, message):
    with pytest.raises(ConfigError, match=message):
        schedule(config)


def test_run_length_must_be_positive():
    with pytest.raises(ValueError, match="epochs >= 1"):
        make_schedule({"type": "constant"}, BASE, STEPS_PER_EPOCH, 0)
