"""Learning-rate schedules: the rate as a pure function of the global step.

Configured in the spec's ``training:`` section, e.g.
``schedule: {type: cosine, warmup_epochs: 2, min_lr: 0.0001}``. Every schedule can start
with a linear warm-up: over the first ``warmup_epochs`` epochs the rate climbs in equal
steps from ``base_lr / warmup_steps`` to ``base_lr``; the schedule proper takes over after.
Because ``lr_at(step)`` depends on nothing else, a resumed run gets the same rates.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from cnnbuild.errors import ConfigError
from cnnbuild.options import Option, Registry, check_config, integer, number

WARMUP = integer(0, "Epochs of linear warm-up from about 0 to the optimizer's lr (0: none).", 0)


class Schedule:
    """Base class: linear warm-up, then ``_decayed(step)``; subclasses set ``type_name``
    and ``options``.

    base_lr: the optimizer's configured lr. The run lasts ``epochs * steps_per_epoch``
    steps, counted from 0.
    """

    type_name: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    description: ClassVar[str] = ""

    def __init__(self, base_lr: float, steps_per_epoch: int, epochs: int, **config: Any) -> None:
        if steps_per_epoch < 1 or epochs < 1:
            raise ValueError(
                f"need steps_per_epoch >= 1 and epochs >= 1, got {steps_per_epoch} and {epochs}"
            )
        self.config = check_config(f"schedule '{self.type_name}'", self.options, config)
        warmup_epochs = self.config["warmup_epochs"]
        if warmup_epochs >= epochs:
            raise ConfigError(
                f"schedule '{self.type_name}': received warmup_epochs={warmup_epochs}, "
                f"which leaves no epochs of the {epochs} to train at the full rate; "
                f"use fewer than {epochs}"
            )
        self.base_lr = float(base_lr)
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = epochs * steps_per_epoch
        self.warmup_steps = warmup_epochs * steps_per_epoch

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.config.items())
        return f"{type(self).__name__}(base_lr={self.base_lr!r}, {options})"

    def lr_at(self, step: int) -> float:
        """The learning rate for global step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        return self._decayed(step)

    def _decayed(self, step: int) -> float:
        """The rate after warm-up."""
        return self.base_lr


SCHEDULES = Registry("schedule", group="cnnbuild.schedules")
register = SCHEDULES.register


def make_schedule(
    config: dict[str, Any], base_lr: float, steps_per_epoch: int, epochs: int
) -> Schedule:
    """Build the schedule ``config`` names, e.g. ``{"type": "step", "step_epochs": 10}``."""
    cls, options = SCHEDULES.split(config)
    return cls(base_lr, steps_per_epoch, epochs, **options)


@register
class Constant(Schedule):
    """lr = base_lr (after any warm-up)."""

    type_name = "constant"
    description = "The optimizer's lr throughout."
    options: ClassVar[dict[str, Option]] = {"warmup_epochs": WARMUP}


@register
class Step(Schedule):
    """lr = base_lr * gamma ** floor(epoch / step_epochs), epoch counted from 0."""

    type_name = "step"
    description = "Multiply the rate by gamma every step_epochs epochs."
    options: ClassVar[dict[str, Option]] = {
        "warmup_epochs": WARMUP,
        "step_epochs": integer(1, "Epochs between decays."),
        "gamma": number("Factor applied at each decay.", 0.1, exclusiveMinimum=0, maximum=1),
    }

    def _decayed(self, step: int) -> float:
        epoch = step // self.steps_per_epoch
        return self.base_lr * self.config["gamma"] ** (epoch // self.config["step_epochs"])


@register
class Cosine(Schedule):
    """Half a cosine from base_lr (end of warm-up) to min_lr (end of the run), as
    torch's CosineAnnealingLR:

        lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * (step - w) / (total - w))) / 2

    with w the warm-up steps and total the steps of the run; constant min_lr beyond.
    """

    type_name = "cosine"
    description = "Cosine decay from the optimizer's lr to min_lr over the run."
    options: ClassVar[dict[str, Option]] = {
        "warmup_epochs": WARMUP,
        "min_lr": number("Rate reached at the end of the run.", 0.0, minimum=0),
    }

    def __init__(self, base_lr: float, steps_per_epoch: int, epochs: int, **config: Any) -> None:
        super().__init__(base_lr, steps_per_epoch, epochs, **config)
        if self.config["min_lr"] > self.base_lr:
            raise ConfigError(
                f"schedule 'cosine': received min_lr={self.config['min_lr']!r}, above the "
                f"optimizer's lr {self.base_lr!r}; it should be at most that"
            )

    def _decayed(self, step: int) -> float:
        min_lr = self.config["min_lr"]
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return min_lr + (self.base_lr - min_lr) * (1 + math.cos(math.pi * progress)) / 2
