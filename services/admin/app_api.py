"""The app's own settings (admin token): time zone, SDK request signing and its secrets,
fraud thresholds. Thin: parse, call ``store``, announce the change, answer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from libs.runtime.deps import ProducerDep, SessionDep
from libs.runtime.errors import Conflict, InvalidInput, NotFound
from libs.runtime.tenancy import AdminAppDep, App
from services.admin import logic, store
from services.admin.changes import announce
from services.admin.schemas import AppRead, AppUpdate, SdkSecretCreated, SdkSecretRead

router = APIRouter(prefix="/admin/v1/app", tags=["app"])


async def _read(session: Any, app: App) -> AppRead:
    secrets = await store.sdk_secrets(session, app_id=app.id)
    return AppRead(
        id=app.id,
        name=app.name,
        timezone=app.timezone,
        require_signature=app.require_signature,
        fraud=dict(app.fraud or {}),
        sdk_secrets=[
            SdkSecretRead(id=s.id, created_at=s.created_at, revoked_at=s.revoked_at)
            for s in secrets
        ],
    )


async def _app(session: Any, app_id: str, *, for_update: bool = False) -> App:
    """The token's app; ``for_update`` locks its row until the request's transaction ends,
    so checks across its secrets (the last active one, signing needs one) hold."""
    app = await session.get(App, app_id, with_for_update=for_update)
    if app is None:  # the token resolved, so only a concurrent delete gets here
        raise NotFound(f"no app {app_id}")
    return app


@router.get("", operation_id="get_app")
async def get_app(app_id: AdminAppDep, session: SessionDep) -> AppRead:
    """The app's settings and its SDK secrets (ids and dates; secrets are never shown
    again after creation)."""
    return await _read(session, await _app(session, app_id))


@router.patch("", operation_id="update_app")
async def update_app(
    body: AppUpdate,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
) -> AppRead:
    """Change the time zone, signing requirement or fraud thresholds. ``fraud`` merges
    into the stored thresholds (``null`` restores a default). Turning signing on needs
    an active SDK secret (409 otherwise). Services pick changes up within 30 s."""
    app = await _app(session, app_id, for_update=True)
    changes = body.model_dump(exclude_unset=True)
    if "timezone" in changes:
        if changes["timezone"] is None or not logic.is_timezone(changes["timezone"]):
            raise InvalidInput("must be an IANA time zone, e.g. Asia/Tehran", field="timezone")
        app.timezone = changes["timezone"]
    if changes.get("require_signature") is True:
        if not [s for s in await store.sdk_secrets(session, app_id=app_id) if not s.revoked_at]:
            raise Conflict(
                "create an SDK secret (POST /admin/v1/app/sdk-secrets) before requiring signatures",
                field="require_signature",
            )
    if changes.get("require_signature") is not None:
        app.require_signature = changes["require_signature"]
    if changes.get("fraud") is not None:
        app.fraud = logic.merge_settings(app.fraud or {}, changes["fraud"])
    announce(request, producer, app_id, "app", app_id, "updated")
    return await _read(session, app)


@router.post("/sdk-secrets", status_code=201, operation_id="create_sdk_secret")
async def create_sdk_secret(
    request: Request, app_id: AdminAppDep, session: SessionDep, producer: ProducerDep
) -> SdkSecretCreated:
    """A new SDK signing secret, shown in this answer only. Several may be active at once:
    create the new one, ship it in the app, then revoke the old one."""
    row, secret = await store.create_sdk_secret(session, app_id=app_id)
    announce(request, producer, app_id, "key", row.id, "created")
    return SdkSecretCreated(
        id=row.id, created_at=row.created_at, revoked_at=row.revoked_at, secret=secret
    )


@router.delete("/sdk-secrets/{secret_id}", operation_id="revoke_sdk_secret")
async def revoke_sdk_secret(
    secret_id: str,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
) -> SdkSecretRead:
    """Revoke a secret: requests signed with it fail within 30 s. The last active secret
    of an app that requires signing cannot be revoked (409): turn signing off first."""
    app = await _app(session, app_id, for_update=True)
    secrets = await store.sdk_secrets(session, app_id=app_id)
    row = next((s for s in secrets if s.id == secret_id), None)
    if row is None:
        raise NotFound(f"no SDK secret {secret_id}", field="secret_id")
    if row.revoked_at is None:
        others = [s for s in secrets if s.revoked_at is None and s.id != secret_id]
        if app.require_signature and not others:
            raise Conflict(
                "the app requires signatures and this is its last active secret",
                field="secret_id",
            )
        await store.revoke_sdk_secret(session, secret=row)
        announce(request, producer, app_id, "key", row.id, "deleted")
    return SdkSecretRead(id=row.id, created_at=row.created_at, revoked_at=row.revoked_at)
