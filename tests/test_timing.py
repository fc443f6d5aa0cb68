"""``cnnbuild time``: per-layer forward and backward times of a training step."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import ROOT, require_engine

from cnnbuild.builder import load
from cnnbuild.cli import main
from cnnbuild.timing import render, time_step


def test_every_layer_gets_a_forward_and_a_backward_time():
    net = load(ROOT / "archs" / "cifar_resnet.yaml", seed=0)
    timing = time_step(net, batch_size=4, steps=2, warmup=1)
    assert [t.name for t in timing.layers] == [node.name for node in net.nodes]
    assert all(t.forward_ms > 0 and t.backward_ms > 0 for t in timing.layers)
    # The timed layers are the step's work, and the step holds them all.
    layers = sum(t.forward_ms + t.backward_ms for t in timing.layers)
    assert layers + timing.update_ms <= timing.step_ms * 1.5
    assert timing.images_per_second == 4 / (timing.step_ms / 1000)


def test_timing_leaves_the_layers_as_they_were():
    net = load(ROOT / "archs" / "mnist.yaml", seed=0)
    time_step(net, batch_size=2, steps=1, warmup=0)
    for node in net.nodes:
        assert "forward" not in vars(node.layer) and "backward" not in vars(node.layer)


def test_render_shows_shares_that_add_up():
    net = load(ROOT / "archs" / "mnist.yaml", seed=0)
    text = render(time_step(net, batch_size=2, steps=1, warmup=0))
    shares = [float(line.split()[-1].rstrip("%")) for line in text.splitlines() if "%" in line]
    assert len(shares) == len(net.nodes)
    assert abs(sum(shares) - 100) < 0.1 * len(shares)
    assert "images/s" in text


@pytest.mark.parametrize("engine", ["numpy", "fast"])
def test_time_command_prints_the_table(engine):
    require_engine(engine)
    result = CliRunner().invoke(
        main,
        ["time", str(ROOT / "archs" / "mnist.yaml"), "-b", "8", "--steps", "2", "--engine", engine],
    )
    assert result.exit_code == 0, result.output
    assert "conv1" in result.output and "backward ms" in result.output
    assert f"batch 8, {engine} engine, median of 2 training steps" in result.output


def test_time_command_rejects_a_bad_batch_size():
    result = CliRunner().invoke(main, ["time", str(ROOT / "archs" / "mnist.yaml"), "-b", "0"])
    assert result.exit_code == 2
    assert "--batch-size" in result.output
