"""Announcing configuration changes on ``config-changes``, shared by admin's routers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from fastapi import Request

from libs.runtime.deps import ProducerDep, after_commit
from libs.schemas import ConfigChanged
from libs.schemas.config_changes import Entity

Action = Literal["created", "updated", "deleted"]


def announce(
    request: Request,
    producer: ProducerDep,
    app_id: str,
    entity: Entity,
    entity_id: str,
    action: Action = "created",
) -> None:
    """Announce a configuration change once it is committed (caches invalidate on it);
    nothing is published when the request's transaction rolls back."""
    change = ConfigChanged(
        app_id=app_id,
        change_id=uuid.uuid4().hex,
        entity=entity,
        entity_id=entity_id,
        action=action,
        ts=datetime.now(UTC),
    )
    after_commit(request, lambda: producer.publish(change))
