"""The run queue's message (RunRequest) and the options a start request may carry (StartOptions)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..run import RunOptions
from ..settings import EXPORT_NAME_RE

# A queued run that meets a running one is skipped at once. (The CLI waits out a crashed run's lease instead;
# a queue retry comes minutes later, when that lease has long expired.)
QUEUE_LOCK_WAIT_SECONDS = 0.0
RUN_ID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{0,79}$")  # new_run_id()'s shape, loosely: no "/" or ".."


@dataclass(frozen=True)
class RunRequest:
    """One message on the run queue."""

    run_id: str
    export: str
    trigger: str
    full_refresh: bool = False
    force_removal: bool = False
    deferrals: int = 0

    def to_json(self) -> str:
        return json.dumps({"runId": self.run_id, "export": self.export, "trigger": self.trigger,
                           "fullRefresh": self.full_refresh, "forceRemoval": self.force_removal,
                           "deferrals": self.deferrals})

    @classmethod
    def from_json(cls, text: str) -> "RunRequest":
        try:
            data = json.loads(text)
            request = cls(run_id=data["runId"], export=data["export"], trigger=data.get("trigger", "queue"),
                          full_refresh=bool(data.get("fullRefresh", False)),
                          force_removal=bool(data.get("forceRemoval", False)),
                          deferrals=int(data.get("deferrals", 0)))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"not a run message ({type(exc).__name__}: {exc})") from None
        if not RUN_ID_RE.match(str(request.run_id)) or not EXPORT_NAME_RE.match(str(request.export)):
            raise ValueError("not a run message (bad runId or export)")
        return request

    def options(self) -> RunOptions:
        return RunOptions(trigger=self.trigger, run_id=self.run_id, full_refresh=self.full_refresh,
                          force_removal=self.force_removal, lock_wait_seconds=QUEUE_LOCK_WAIT_SECONDS)


@dataclass(frozen=True)
class StartOptions:
    full_refresh: bool = False
    force_removal: bool = False
