"""Deserialized workflows kept between commands, keyed by instance id and row version.

Deserializing costs about as much as running a task. A workflow object is reused only if the
database row still has the exact version it was cached at (so a change made by another process or
worker is never missed), and it is taken OUT of the cache while a command uses it (so two threads
never share one), then put back only after that command committed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from SpiffWorkflow.bpmn.workflow import BpmnWorkflow


class LiveCache:
    def __init__(self, max_entries: int) -> None:
        self._entries: OrderedDict[str, tuple[int, BpmnWorkflow]] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def take(self, instance_id: str, version: int) -> BpmnWorkflow | None:
        with self._lock:
            entry = self._entries.pop(instance_id, None)
        if entry is None or entry[0] != version:
            return None
        return entry[1]

    def put(self, instance_id: str, version: int, workflow: BpmnWorkflow) -> None:
        if self._max <= 0:
            return
        with self._lock:
            self._entries[instance_id] = (version, workflow)
            self._entries.move_to_end(instance_id)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def discard(self, instance_id: str) -> None:
        with self._lock:
            self._entries.pop(instance_id, None)
