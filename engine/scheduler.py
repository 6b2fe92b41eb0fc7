"""The scheduler loop: APScheduler drives polling; the database decides who fires what.

Each process runs its own APScheduler with an in-memory job store holding a single interval job
(``poll``); jobs to fire live in Baton's ``job`` table and are leased through the management
service, so any number of scheduler processes can share one PostgreSQL database safely.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from engine.facade import Engine
from engine.management import JobOutcome

log = logging.getLogger(__name__)


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class JobRunner:
    """Leases due jobs and fires them; ``run_once`` is one poll (tests call it directly)."""

    def __init__(
        self, engine: Engine, *, owner: str | None = None, batch: int = 50, lease_seconds: float = 60
    ):
        self.engine = engine
        self.owner = owner or default_owner()
        self.batch = batch
        self.lease_seconds = lease_seconds
        self._lock = threading.Lock()

    def run_once(self) -> list[JobOutcome]:
        if not self._lock.acquire(blocking=False):
            return []  # the previous poll is still firing
        try:
            outcomes: list[JobOutcome] = []
            while True:
                jobs = self.engine.management.acquire_due_jobs(
                    self.owner, limit=self.batch, lease_seconds=self.lease_seconds
                )
                outcomes += [self.engine.management.fire(job, self.owner) for job in jobs]
                if len(jobs) < self.batch:
                    return outcomes
        finally:
            self._lock.release()

    def _poll(self) -> None:
        try:
            self.run_once()
        except Exception:  # noqa: BLE001 - e.g. the database is briefly down: poll again next time
            log.exception("scheduler poll failed")

    def start_background(self, interval: float = 0.5) -> BackgroundScheduler:
        """Embedded mode (``baton serve``): poll in a daemon thread of the web process."""
        scheduler = BackgroundScheduler(daemon=True)
        scheduler.add_job(self._poll, "interval", seconds=interval, id="poll", max_instances=1, coalesce=True)
        scheduler.start()
        return scheduler

    def run_forever(self, interval: float = 0.5) -> None:
        """Standalone mode (``baton scheduler``): block and poll until interrupted."""
        scheduler = BlockingScheduler()
        scheduler.add_job(self._poll, "interval", seconds=interval, id="poll", max_instances=1, coalesce=True)
        log.info("scheduler %s polling every %.2fs", self.owner, interval)
        scheduler.start()
