"""The ``log`` action: one structured log line per record, and nothing sent anywhere. For dry runs
and tests: it shows which records an action would run for without a destination. The line names
the request, the action and the record index only, never the record's data."""

from __future__ import annotations

from typing import Literal

import structlog

from hookbay.actions.base import ActionConfig, ActionResult, ActionRun
from hookbay.settings import Settings

log = structlog.get_logger("hookbay.actions.log")


class LogAction(ActionConfig):
    """Write one log line (event ``action_log``) naming the request id, the action and the record index."""

    type: Literal["log"]

    def destination(self, settings: Settings) -> str:
        return "log"

    async def execute(self, run: ActionRun) -> ActionResult:
        log.info("action_log", request_id=run.request_id, action=run.action_name, record_index=run.record_idx,
                 delivery_id=run.delivery_id, source_id=run.source.id)
        return ActionResult(None, "logged")
