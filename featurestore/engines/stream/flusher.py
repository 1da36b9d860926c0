"""Work off the loop thread: the loop keeps consuming while Delta and Redis write.

``Flusher`` runs checkpoints; ``OneInFlight`` runs a sink's writes one at a time.

One checkpoint at a time. The loop submits the sinks' work together with the
offsets it covers; when the work is done, the loop itself (never this thread)
flushes the dead letters and commits those offsets, so every Kafka call stays on
the loop thread. A failure is kept and raised on the loop thread; the offsets of
the failed work are never committed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

TP = tuple[str, int]


@dataclass
class _Job:
    work: list[Callable[[], None]]
    positions: dict[TP, int]
    started: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class Flusher:
    """Runs one checkpoint's work at a time on a daemon thread."""

    def __init__(self, name: str = "featurestore-stream-flush") -> None:
        self._name = name
        self._job: _Job | None = None

    @property
    def busy(self) -> bool:
        return self._job is not None

    def submit(self, work: list[Callable[[], None]], positions: dict[TP, int]) -> None:
        if self._job is not None:
            raise RuntimeError("a checkpoint is already in flight")
        job = _Job(work, positions)
        self._job = job
        if not work:
            job.done.set()
            return
        threading.Thread(target=self._run, args=(job,), name=self._name, daemon=True).start()

    @staticmethod
    def _run(job: _Job) -> None:
        try:
            for step in job.work:
                step()
        except BaseException as exc:  # handed to the loop thread, which raises it
            job.error = exc
        finally:
            job.done.set()

    def finished(self, *, wait: bool = False) -> tuple[dict[TP, int], float] | None:
        """The positions and start time of the job in flight once it is done (waiting for
        it with ``wait``); None while it runs or when there is none. Raises its error."""
        job = self._job
        if job is None or not (job.done.wait() if wait else job.done.is_set()):
            return None
        self._job = None
        if job.error is not None:
            raise job.error
        return job.positions, job.started


class OneInFlight:
    """Runs each submitted call on a helper thread, one at a time: ``submit`` first
    waits for the previous call, so work is pipelined one deep and stays ordered."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, call: Callable[[], None]) -> None:
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(call,), name=self._name)
        self._thread.daemon = True
        self._thread.start()

    def _run(self, call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as exc:  # raised on the loop thread by the next wait()
            self._error = exc

    def wait(self) -> None:
        """Block until the call in flight is done; raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc
