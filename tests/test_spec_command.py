"""`cnnbuild spec CKPT`: the architecture and settings a checkpoint holds, back out as YAML."""

import pytest
from click.testing import CliRunner
from conftest import ARCHS
from test_promise_training import synthetic

import cnnbuild
from cnnbuild.callbacks import standard_callbacks
from cnnbuild.cli import main
from cnnbuild.train import Trainer, resolve_config


def saved(arch, folder):
    """A checkpoint of ``arch`` as training writes it (untrained weights)."""
    net = cnnbuild.load(arch, seed=0)
    config = resolve_config(net.spec.get("training", {}))
    held_out = config["validation"] if isinstance(config["validation"], int) else 0
    train, test = synthetic(net.input_shape, held_out + 4, 1), synthetic(net.input_shape, 2, 2)
    return Trainer(net, config, train, test, standard_callbacks(folder)).save(folder / "x.npz")


@pytest.mark.parametrize("arch", ARCHS, ids=[path.stem for path in ARCHS])
def test_the_spec_a_checkpoint_holds_rebuilds_the_same_network(tmp_path, arch):
    checkpoint = saved(arch, tmp_path)
    out = tmp_path / "back.yaml"
    result = CliRunner().invoke(main, ["spec", str(checkpoint), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("# yaml-language-server: $schema=")
    summaries = [CliRunner().invoke(main, ["summary", str(path)]) for path in (arch, out)]
    assert summaries[0].exit_code == summaries[1].exit_code == 0
    assert summaries[0].output == summaries[1].output
    assert cnnbuild.load(out).spec["training"] == resolve_config(
        cnnbuild.load(arch).spec.get("training", {})
    )
