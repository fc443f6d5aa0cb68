from collections.abc import Iterator
from pathlib import Path

import pytest
from datafiles import Server, isolate, serving

ROOT = Path(__file__).resolve().parent.parent
ARCHS = sorted((ROOT / "archs").glob("*.yaml"))


@pytest.fixture
def write_spec(tmp_path):
    """Write YAML text to a file and return its path."""

    def write(text: str, name: str = "net.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No real data: the cache, $CNNBUILD_DATA and system folders point into tmp_path."""
    return isolate(tmp_path, monkeypatch)


@pytest.fixture
def http_server() -> Iterator[Server]:
    """A local HTTP server on 127.0.0.1 with settable routes."""
    with serving() as server:
        yield server


def pytest_terminal_summary(terminalreporter):
    """Print the figures of the promise tests (tests/test_promise_*.py) after the run."""
    from promises import table

    lines = table()
    if lines:
        terminalreporter.write_sep("=", "promises")
        for line in lines:
            terminalreporter.write_line(line)
