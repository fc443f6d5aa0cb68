import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from datafiles import Server, isolate, serving

ROOT = Path(__file__).resolve().parent.parent
ARCHS = sorted((ROOT / "archs").glob("*.yaml"))


def require_engine(engine: str) -> None:
    """Skip a test of the fast engine without numba, except in CI, which installs it (the
    test extra): there a missing numba fails."""
    if engine == "fast" and importlib.util.find_spec("numba") is None:
        if os.environ.get("CI"):
            pytest.fail("numba is missing: CI installs it (pip install -e '.[test]')")
        pytest.skip("the fast engine needs numba: pip install 'cnnbuild[fast]'")


@pytest.fixture
def fast_engine():
    """The cnnbuild.fast package (see ``require_engine``)."""
    require_engine("fast")
    import cnnbuild.fast

    return cnnbuild.fast


@pytest.fixture
def write_spec(tmp_path):
    """Write YAML text to a file and return its path."""

    def write(text: str, name: str = "net.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def without_curves(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cnnbuild train` in this process without matplotlib, so without curves.png: drawing
    it is most of the time of a tiny run."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No real data: the cache, $CNNBUILD_DATA and system folders point into tmp_path."""
    return isolate(tmp_path, monkeypatch)


@pytest.fixture
def http_server() -> Iterator[Server]:
    """A local HTTP server on 127.0.0.1 with settable routes."""
    with serving() as server:
        yield server


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """train/<class>/*.png and test/<class>/*.png of the tiny task, as a user's own data."""
    image = pytest.importorskip("PIL.Image")
    from test_train import tiny_dataset

    root = tmp_path_factory.mktemp("images")
    for split, dataset in (("train", tiny_dataset(96, 1)), ("test", tiny_dataset(48, 2))):
        for i, (pixels, label) in enumerate(zip(dataset.images, dataset.labels, strict=True)):
            folder = root / split / f"{label}_{dataset.class_names[label]}"
            folder.mkdir(parents=True, exist_ok=True)
            image.fromarray(pixels[0]).save(folder / f"{i}.png")
    return root


def pytest_terminal_summary(terminalreporter):
    """Print the figures of the promise tests (tests/test_promise_*.py) after the run."""
    from promises import table

    lines = table()
    if lines:
        terminalreporter.write_sep("=", "promises")
        for line in lines:
            terminalreporter.write_line(line)
