"""The scheduler loop: APScheduler drives polling; the database decides who fires what.

Each process runs its own APScheduler with an in-memory job store holding a single interval job
(``poll``); jobs to fire live in Baton's ``job`` table and are leased through the management
service, so any number of scheduler processes can share one PostgreSQL database safely.

Within one process a poll leases a batch of due jobs and fires them on a small thread pool
(PostgreSQL: a firing mostly waits on round trips, so a few run at once; SQLite: one writer at a
time, so one). A job's lease must outlast its batch: a process that dies (``kill -9``) leaves its
leases to expire, and another process fires those jobs ``lease_seconds`` later.

Every ``SETTLE_SECONDS`` a poll also folds the measures' tally rows (``engine.measures.settle``),
so the dashboards read one row per process, department, hour and state, whatever the traffic.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from engine.facade import Engine
from engine.management import JobOutcome, LeasedJob

log = logging.getLogger(__name__)

DEFAULT_BATCH = 50
DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_INTERVAL = 0.25  # an empty poll is one index probe: ~0.2 ms (docs/benchmarks.md)
SETTLE_SECONDS = 60.0


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def default_workers(engine: Engine) -> int:
    """Firing threads per process: SQLite has one writer at a time, PostgreSQL waits on round trips."""
    return 1 if engine.db.dialect == "sqlite" else 4


class _OverlappingPolls(logging.Filter):
    """A poll that runs longer than the interval already fires what came due meanwhile (it loops
    while batches come back full): APScheduler's warning for each skipped tick is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


def _quiet_overlapping_polls() -> None:
    logger = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, _OverlappingPolls) for f in logger.filters):
        logger.addFilter(_OverlappingPolls())


class JobRunner:
    """Leases due jobs and fires them; ``run_once`` is one poll (tests call it directly)."""

    def __init__(
        self,
        engine: Engine,
        *,
        owner: str | None = None,
        batch: int = DEFAULT_BATCH,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        workers: int | None = None,
    ):
        if batch < 1 or lease_seconds <= 0:
            raise ValueError("batch must be at least 1 and lease_seconds positive")
        self.engine = engine
        self.owner = owner or default_owner()
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.workers = workers if workers is not None else default_workers(engine)
        self._pool = (
            ThreadPoolExecutor(self.workers, thread_name_prefix="baton-fire") if self.workers > 1 else None
        )
        self._lock = threading.Lock()
        self._settled_at: float | None = None

    def run_once(self) -> list[JobOutcome]:
        """Fire every job due now: lease a batch, fire it, and go on while batches come back full."""
        if not self._lock.acquire(blocking=False):
            return []  # the previous poll is still firing
        try:
            outcomes: list[JobOutcome] = []
            while True:
                jobs = self.engine.management.acquire_due_jobs(
                    self.owner, limit=self.batch, lease_seconds=self.lease_seconds
                )
                outcomes += self._fire_all(jobs)
                if len(jobs) < self.batch:
                    return outcomes
        finally:
            self._lock.release()

    def _fire_all(self, jobs: list[LeasedJob]) -> list[JobOutcome]:
        fire = self.engine.management.fire
        if self._pool is None or len(jobs) < 2:
            return [fire(job, self.owner) for job in jobs]
        # One job per instance (a unique index), so no two of these touch the same instance.
        return list(self._pool.map(lambda job: fire(job, self.owner), jobs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def settle_measures(self) -> int | None:
        """Fold the measures' tally rows if the last time was ``SETTLE_SECONDS`` ago (or never):
        how many rows were folded, None when it was not time yet."""
        now = time.monotonic()
        if self._settled_at is not None and now - self._settled_at < SETTLE_SECONDS:
            return None
        self._settled_at = now
        return self.engine.measures.settle()

    def _poll(self) -> None:
        try:
            self.run_once()
            self.settle_measures()
        except Exception:  # noqa: BLE001 - e.g. the database is briefly down: poll again next time
            log.exception("scheduler poll failed")

    def _add_poll(self, scheduler, interval: float) -> None:
        _quiet_overlapping_polls()
        self.engine.retention.schedule()  # the daily history-retention job, while a policy is set
        scheduler.add_job(
            self._poll,
            "interval",
            seconds=interval,
            id="poll",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )

    def start_background(self, interval: float = DEFAULT_INTERVAL) -> BackgroundScheduler:
        """Embedded mode (``baton serve``): poll in a daemon thread of the web process."""
        scheduler = BackgroundScheduler(daemon=True)
        self._add_poll(scheduler, interval)
        scheduler.start()
        return scheduler

    def run_forever(self, interval: float = DEFAULT_INTERVAL) -> None:
        """Standalone mode (``baton scheduler``): block and poll until interrupted."""
        scheduler = BlockingScheduler()
        self._add_poll(scheduler, interval)
        log.info(
            "scheduler %s polling every %.2fs (batch %d, lease %.0fs, %d firing thread(s))",
            self.owner,
            interval,
            self.batch,
            self.lease_seconds,
            self.workers,
        )
        try:
            scheduler.start()
        finally:
            self.close()
