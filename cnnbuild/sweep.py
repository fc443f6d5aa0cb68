"""`cnnbuild sweep`: an Optuna study over the variants that a spec's ``sweep:`` section
describes (see `cnnbuild.search_space`).

Each trial trains the spec with its sampled ``--set`` values in an ordinary run folder,
``<sweep folder>/trial-NNNN``. The study lives in storage: by default a SQLite file in the
sweep folder; any Optuna RDB URL (PostgreSQL, MySQL) can be shared by processes on several
machines. ``trials`` is the study's total: complete, pruned and failed trials count; a trial
that was interrupted (a signal, a crash) does not, and its values are tried again. A running
trial's process records a heartbeat, so the others notice when it dies.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import multiprocessing
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cnnbuild.callbacks import STOP_SIGNALS
from cnnbuild.console import duration
from cnnbuild.errors import CnnbuildError
from cnnbuild.files import alive
from cnnbuild.runfolder import RUNS
from cnnbuild.search_space import SearchSpace
from cnnbuild.sweep_section import read_search_space, written_values
from cnnbuild.train import Callback, Trainer

MISSING = "cnnbuild sweep needs Optuna — install it with: pip install 'cnnbuild[sweep]'"
HEARTBEAT_SECONDS = 20
GRACE_SECONDS = 90  # a running trial without a heartbeat for this long has died
OPEN_ATTEMPTS = 4
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

Echo = Callable[[str], None]


class SweepError(CnnbuildError):
    """The sweep cannot start or go on: its storage, its folder or its study say why."""


@dataclass(frozen=True)
class Sweep:
    """Everything a sweep process needs, picklable for the worker processes."""

    spec_file: str
    overrides: tuple[str, ...]
    space: SearchSpace
    folder: Path
    storage: str
    study: str
    trials: int
    epochs: int
    written: dict[str, Any] | None  # the spec's own values: the first trial of a new study


def prepare(
    spec_file: str,
    overrides: tuple[str, ...] = (),
    trials: int | None = None,
    storage: str | None = None,
    study: str | None = None,
    out: str | None = None,
) -> Sweep:
    """Read and check the spec and its sweep section; choose the folder and storage."""
    from cnnbuild.overrides import read_spec
    from cnnbuild.train import resolve_config

    spec = read_spec(spec_file, overrides)
    space = read_search_space(spec)
    name = spec.data["name"]
    folder = Path(out) if out is not None else RUNS / f"{name}-sweep"
    if storage is None:
        _make_folder(folder)
        storage = f"sqlite:///{folder / 'study.db'}"
    config = resolve_config(spec.data.get("training", {}))
    total = trials or space.trials or 16
    if space.sampler == "grid" and total > space.grid_size():
        total = space.grid_size()
        space.notes.append(f"the grid has {total} combinations: the study runs {total} trials")
    return Sweep(
        spec_file=spec_file,
        overrides=tuple(overrides),
        space=space,
        folder=folder,
        storage=storage,
        study=study or name,
        trials=total,
        epochs=config["epochs"],
        written=written_values(space, spec),
    )


def run_sweep(sweep: Sweep, workers: int, echo: Echo) -> int:
    """Run the study to ``sweep.trials`` trials with ``workers`` processes; returns the exit
    status: 0, or 128 + the number of the signal that stopped it."""
    study = open_study(sweep)
    _check_folder(sweep, study)
    for note in sweep.space.notes:
        echo(f"note: {note}")
    done = _counted(study)
    echo(
        f"sweep {sweep.study!r}: {sweep.trials} trials ({done} done), {workers} worker"
        f"{'s' if workers > 1 else ''}, {sweep.space.sampler} sampler, {sweep.space.pruner} "
        f"pruner, {sweep.space.direction} {sweep.space.metric}; trials in {sweep.folder}/; "
        f"storage {_shown_url(sweep.storage)}"
    )
    received = work(sweep, echo) if workers == 1 else _run_workers(sweep, workers)
    return 128 + received if received else 0


def open_study(sweep: Sweep, create: bool = True) -> Any:
    """The Optuna study of ``sweep`` (created if new, with ``create``); refuses one made for
    another metric or search space."""
    optuna = _optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for attempt in range(OPEN_ATTEMPTS):
        try:
            study = _open(optuna, sweep, create)
            break
        except ImportError as error:  # Optuna wraps the driver's ModuleNotFoundError
            missing = getattr(error.__cause__, "name", None) or getattr(error, "name", None)
            raise SweepError(
                f"the storage {_shown_url(sweep.storage)} needs the database driver {missing} "
                "— install it (for PostgreSQL: pip install 'psycopg[binary]')"
            ) from None
        except KeyError:
            raise SweepError(
                f"no study {sweep.study!r} in {_shown_url(sweep.storage)} — run the sweep first "
                "(without --show), or give the --study and --storage it ran with"
            ) from None
        except Exception as error:  # SQLAlchemy's: a bad URL, a server that is down, a race
            if type(error).__module__.split(".")[0] not in ("sqlalchemy", "optuna"):
                raise
            if attempt == OPEN_ATTEMPTS - 1:
                reason = str(error).strip().splitlines()[0]
                raise SweepError(
                    f"cannot open the study storage {_shown_url(sweep.storage)}: {reason}"
                ) from None
            time.sleep(1 + attempt)  # processes creating a new database's tables at once
    _check_same_search(study, sweep)
    if sweep.space.sampler == "grid":
        _queue_grid(study, sweep.space)
    elif sweep.written is not None:
        _queue_once(study, "written_queued", [sweep.written])
    return study


def _open(optuna: Any, sweep: Sweep, create: bool) -> Any:
    with _quiet_optuna():
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)
        storage = optuna.storages.RDBStorage(
            sweep.storage,
            engine_kwargs=_engine_options(sweep.storage),
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=retry,
        )
        if not create:
            return optuna.load_study(study_name=sweep.study, storage=storage)
        return optuna.create_study(
            study_name=sweep.study,
            storage=storage,
            sampler=_sampler(sweep.space),
            pruner=_pruner(sweep.space, sweep.epochs),
            direction=sweep.space.direction,
            load_if_exists=True,
        )


def work(sweep: Sweep, echo: Echo) -> int | None:
    """Run trials until the study has ``sweep.trials`` (or a stop signal arrives); returns
    the signal's number, if one stopped it."""
    study = open_study(sweep)
    with _stop_requests() as stop:
        while stop.received is None:
            _recover(study)
            if _counted(study, running=True) >= sweep.trials:
                break
            with _quiet_optuna():
                trial = study.ask()
            if _surplus(study, trial, sweep.trials):
                trial.set_user_attr("surplus", True)
                study.tell(trial, state=_state("FAIL"))
                break
            stopped = _run_trial(sweep, study, trial, echo)
            if stopped is not None:
                return stopped
    return stop.received


class ReportToStudy(Callback):
    """Reports each epoch's metric to the trial and stops the run when the pruner says so."""

    def __init__(self, trial: Any, metric: str, echo: Echo) -> None:
        self.trial, self.metric, self.echo = trial, metric, echo
        self.pruned_at: int | None = None

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None:
        value, epoch = record[self.metric], int(record["epoch"])
        if not math.isfinite(value):
            return
        self.trial.report(value, epoch)
        self.echo(f"trial {self.trial.number} epoch {epoch}: {self.metric} {value:.4f}")
        if self.trial.should_prune():
            self.pruned_at = epoch
            trainer.stop(f"pruned by the sweep after epoch {epoch} ({self.metric} {value:.4f})")


# --- one trial ----------------------------------------------------------------------------


def _run_trial(sweep: Sweep, study: Any, trial: Any, echo: Echo) -> int | None:
    """Train one trial and tell the study how it went; returns a signal's number if one
    interrupted it (the trial is then retried later)."""
    from cnnbuild.commands import train_spec
    from cnnbuild.data import DataError
    from cnnbuild.engine import resolve as resolve_engine
    from cnnbuild.overrides import read_spec
    from cnnbuild.runfolder import RunFolderError
    from cnnbuild.train import resolve_config

    space = sweep.space
    values = {p.path: p.suggest(trial) for p in space.parameters}
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    overrides = space.overrides(values)
    echo(f"trial {trial.number}: " + " ".join(overrides))
    report = ReportToStudy(trial, space.metric, echo)
    started = time.monotonic()
    try:
        with _heartbeat(study, trial):
            spec = read_spec(sweep.spec_file, [*sweep.overrides, *overrides])
            spec.data.pop("sweep", None)
            config = resolve_config(spec.data.get("training", {}))
            config["engine"] = resolve_engine(config["engine"])  # as the trial's run records
            trial.set_user_attr("spec", _spec_text(spec.data, config))
            folder = sweep.folder / f"trial-{trial.number:04d}"
            outcome = train_spec(spec, config, out=folder, callbacks=[report], console=False)
    except (DataError, RunFolderError, OSError, KeyboardInterrupt):
        _interrupted(study, trial, "stopped by an error of the sweep, not of the trial")
        raise
    except CnnbuildError as error:  # this variant is invalid or its training failed
        message = str(error).strip()
        trial.set_user_attr("error", message)
        trial.set_user_attr("seconds", round(time.monotonic() - started, 1))
        study.tell(trial, state=_state("FAIL"))
        echo(f"trial {trial.number} failed: {message.splitlines()[0]}")
        return None
    seconds = round(time.monotonic() - started, 1)
    trial.set_user_attr("run_dir", str(outcome.run_dir))
    trial.set_user_attr("seconds", seconds)
    trial.set_user_attr("epochs", len(outcome.history))
    if outcome.signal is not None:
        _interrupted(study, trial, f"stopped by {signal.Signals(outcome.signal).name}")
        echo(f"trial {trial.number} interrupted: it runs again when the sweep goes on")
        return outcome.signal
    history = [row for row in outcome.history if math.isfinite(row[space.metric])]
    if report.pruned_at is not None:
        study.tell(trial, state=_state("PRUNED"))
        echo(f"trial {trial.number} pruned after epoch {report.pruned_at} ({duration(seconds)})")
        return None
    pick = max if space.direction == "maximize" else min
    best = pick(history, key=lambda row: row[space.metric])
    trial.set_user_attr("best_epoch", int(best["epoch"]))
    trial.set_user_attr("test_accuracy", best["test_accuracy"])
    study.tell(trial, best[space.metric])
    echo(
        f"trial {trial.number} complete: {space.metric} {best[space.metric]:.4f} at epoch "
        f"{int(best['epoch'])} of {len(outcome.history)} ({duration(seconds)}) — "
        f"{outcome.run_dir}"
    )
    return None


def _spec_text(network: dict[str, Any], config: dict[str, Any]) -> str:
    """The trial's full spec as YAML: the network with its overrides, resolved training."""
    data = {key: value for key, value in network.items() if key != "training"}
    data["training"] = config
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True)


def _interrupted(study: Any, trial: Any, why: str) -> None:
    """Mark a running trial as interrupted (it does not count) and queue its values again."""
    trial.set_user_attr("interrupted", why)
    study.tell(trial, state=_state("FAIL"), skip_if_finished=True)
    _retry(study, study._storage.get_trial(trial._trial_id))


def _retry(study: Any, frozen: Any) -> None:
    optuna = _optuna()
    with _quiet_optuna():
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)(study, frozen)


def _recover(study: Any) -> None:
    """Trials left running by a process that died: on this machine, one whose process is
    gone; anywhere, one without a heartbeat for GRACE_SECONDS. Each is marked interrupted
    and its values queued again."""
    optuna = _optuna()
    with _quiet_optuna():
        optuna.storages.fail_stale_trials(study)  # retried by the storage's callback
    here = socket.gethostname()
    for frozen in study.get_trials(deepcopy=False, states=(_state("RUNNING"),)):
        attrs = frozen.user_attrs
        if attrs.get("host") != here or "pid" not in attrs or alive(attrs["pid"]):
            continue
        if attrs["pid"] == os.getpid():
            continue
        try:
            study._storage.set_trial_user_attr(frozen._trial_id, "interrupted", "its process died")
            study._storage.set_trial_state_values(frozen._trial_id, state=_state("FAIL"))
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process recovered it first
        _retry(study, study._storage.get_trial(frozen._trial_id))


# --- counting -------------------------------------------------------------------------------


def trial_state(frozen: Any) -> str:
    """complete, pruned, failed, interrupted, running, waiting or surplus."""
    name = frozen.state.name.lower()
    if name == "fail":
        if frozen.user_attrs.get("surplus"):
            return "surplus"
        return "failed" if "error" in frozen.user_attrs else "interrupted"
    return {"complete": "complete", "pruned": "pruned", "running": "running"}.get(name, name)


def _counted(study: Any, running: bool = False) -> int:
    """The trials that count towards the total (and those running, with ``running``)."""
    counted = {"complete", "pruned", "failed"} | ({"running"} if running else set())
    return sum(trial_state(t) in counted for t in study.get_trials(deepcopy=False))


def _surplus(study: Any, trial: Any, total: int) -> bool:
    """Whether ``trial`` is beyond the total: processes asking at once can overshoot, and the
    trial with the higher number then gives way."""
    taken = {"complete", "pruned", "failed", "running"}
    before = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.number < trial.number and trial_state(t) in taken
    ]
    return len(before) >= total


# --- processes ------------------------------------------------------------------------------


def _run_workers(sweep: Sweep, workers: int) -> int | None:
    """Run ``workers`` processes of `work`, dividing the cores between their BLAS threads;
    a stop signal is passed on to each (they finish their step and save)."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    processes = []
    with _environment({name: str(threads) for name in THREAD_VARIABLES}):
        for _ in range(workers):
            process = context.Process(target=_worker, args=(sweep,))
            process.start()
            processes.append(process)
    received: list[int] = []

    def pass_on(number: int, frame: Any) -> None:
        received.append(number)
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, number)

    previous = {number: signal.signal(number, pass_on) for number in _stop_signals()}
    try:
        for process in processes:
            process.join()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    failed = [p.exitcode for p in processes if p.exitcode not in (0, None) and p.exitcode < 128]
    if failed and not received:
        raise SweepError(f"{len(failed)} of {workers} worker processes stopped with an error")
    return received[0] if received else None


def _worker(sweep: Sweep) -> None:
    """A worker process: its own process group, so that Ctrl-C reaches only the parent,
    which passes it on once."""
    import sys

    os.setpgid(0, 0)

    def echo(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        received = work(sweep, echo)
    except CnnbuildError as error:
        echo(f"error: {error}")
        sys.exit(2)
    except KeyboardInterrupt:  # a second stop signal: the trial is marked interrupted
        sys.exit(128 + signal.SIGINT)
    sys.exit(128 + received if received else 0)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _StopRequests:
    received: int | None = None


@contextlib.contextmanager
def _stop_requests() -> Iterator[_StopRequests]:
    """Between trials, a stop signal ends the sweep after the current step; during training
    the trainer's own handler (StopOnSignal) takes it."""
    stop = _StopRequests()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request(number: int, frame: Any) -> None:
        if stop.received is not None:
            raise KeyboardInterrupt
        stop.received = number

    previous = {number: signal.signal(number, request) for number in _stop_signals()}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _stop_signals() -> list[int]:
    return [getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)]


@contextlib.contextmanager
def _heartbeat(study: Any, trial: Any) -> Iterator[None]:
    """Record the trial's heartbeat every HEARTBEAT_SECONDS while the block runs."""
    storage, done = study._storage, threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial._trial_id)
            if done.wait(HEARTBEAT_SECONDS):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


# --- Optuna ---------------------------------------------------------------------------------


def _optuna() -> Any:
    try:
        import optuna
    except ModuleNotFoundError:
        raise SweepError(MISSING) from None
    return optuna


def _state(name: str) -> Any:
    return _optuna().trial.TrialState[name]


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna calls heartbeats outside `optimize` and its retry callback experimental; they
    are what a sweep of several processes needs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=_optuna().exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message=".*[Hh]eartbeat.*")
        yield


def _sampler(space: SearchSpace) -> Any:
    samplers = _optuna().samplers
    if space.sampler in ("random", "grid"):  # the grid's trials are queued: `_queue_grid`
        return samplers.RandomSampler()
    with _quiet_optuna():  # constant_liar: workers in parallel spread out
        return samplers.TPESampler(constant_liar=True)


def _queue_grid(study: Any, space: SearchSpace) -> None:
    """Queue every combination of the grid. (Optuna's own GridSampler stops the study from
    inside `optimize`, which ask-and-tell does not use.)"""
    grid = space.grid()
    combinations = [
        dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())
    ]
    _queue_once(study, "grid_queued", combinations)


def _queue_once(study: Any, flag: str, trials: list[dict[str, Any]]) -> None:
    """Queue ``trials`` (their values) when the study is new, once."""
    if study.user_attrs.get(flag) or study.get_trials(deepcopy=False):
        return
    study.set_user_attr(flag, True)
    for values in trials:
        study.enqueue_trial(values)


def _pruner(space: SearchSpace, epochs: int) -> Any:
    pruners = _optuna().pruners
    if space.pruner == "median":
        return pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)
    if space.pruner == "hyperband":
        return pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    return pruners.NopPruner()


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):  # several processes share the file: wait for its lock
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}


def _check_same_search(study: Any, sweep: Sweep) -> None:
    """A study keeps its metric and search space: refuse to mix in trials of another."""
    described = {
        "metric": sweep.space.metric,
        "direction": sweep.space.direction,
        "space": [vars(p) | {"choices": list(p.choices)} for p in sweep.space.parameters],
    }
    text = json.dumps(described, sort_keys=True, default=str)
    saved = study.user_attrs.get("cnnbuild")
    if saved is None:
        study.set_user_attr("cnnbuild", text)
    elif saved != text:
        raise SweepError(
            f"the study {sweep.study!r} in {_shown_url(sweep.storage)} was started with another "
            "sweep section (metric or space) — give a new --study name to search this one"
        )


def _check_folder(sweep: Sweep, study: Any) -> None:
    """A new study in a folder that holds another study's trials would mix their folders."""
    if study.get_trials(deepcopy=False) or not sweep.folder.is_dir():
        return
    if any(sweep.folder.glob("trial-*")):
        raise SweepError(
            f"{sweep.folder} holds the trial folders of another study — give another --out, "
            "or remove them"
        )


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SweepError(
            f"cannot make the sweep folder {folder}: {error.strerror} — choose another with --out"
        ) from None


def _shown_url(url: str) -> str:
    """The storage URL without its password."""
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, credentials = head.partition("//")
    user = credentials.split(":", 1)[0]
    return f"{scheme}//{user}:***@{tail}"
