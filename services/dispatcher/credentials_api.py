"""Write-only admin endpoints of the app's provider credentials (admin token).

Secrets go in and never come out: answers carry the provider's config and metadata
(FCM project and service account, APNs key id/team/topic, the VAPID public key the web
SDK subscribes with, the last four characters of API keys and passwords). Secrets are
sealed with the master key's public half before they reach the database, are never
logged, and every change is announced on ``config-changes`` (entity ``provider``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from libs.runtime.deps import ProducerDep, SessionDep, SettingsDep, after_commit
from libs.runtime.errors import InvalidInput, NotFound, Unavailable
from libs.runtime.tenancy import AdminAppDep
from libs.schemas import ConfigChanged
from services.dispatcher import credentials, credentials_store
from services.dispatcher.credentials import CHANNEL_OF, Keyring, Sealer, SecretsKeyError
from services.dispatcher.providers.registry import invalidate_everywhere

router = APIRouter(prefix="/admin/v1/app/providers", tags=["providers"])


class CredentialSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(default_factory=dict)
    # Write-only: never answered, never logged.
    secret: str = Field(min_length=1, max_length=credentials.MAX_SECRET, repr=False)
    enabled: bool = True


class CredentialUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] | None = None
    enabled: bool | None = None


class SecretRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str = Field(min_length=1, max_length=credentials.MAX_SECRET, repr=False)


class CredentialRead(BaseModel):
    provider: str
    channel: str
    enabled: bool
    config: dict[str, Any]
    metadata: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime
    secret_rotated_at: datetime


class CredentialList(BaseModel):
    items: list[CredentialRead]


def _read(row: credentials_store.ProviderCredential) -> CredentialRead:
    config = dict(row.config)
    if row.provider == "sms_http":
        # Header and body templates may hold literal values an admin typed; they are
        # config, but show only their names.
        config["headers"] = sorted(config.get("headers") or {})
    return CredentialRead(
        provider=row.provider,
        channel=CHANNEL_OF[row.provider],
        enabled=row.enabled,
        config=config,
        metadata=dict(row.metadata_),
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        secret_rotated_at=row.secret_rotated_at,
    )


def _sealer(settings: Any) -> Sealer:
    try:
        return Keyring.from_settings(settings).sealer
    except SecretsKeyError as exc:
        raise Unavailable(f"provider credentials cannot be stored: {exc}") from None


def _provider(provider: str) -> str:
    if provider not in credentials.PROVIDERS:
        raise NotFound(
            f"unknown provider {provider}; one of {', '.join(credentials.PROVIDERS)}",
            field="provider",
        )
    return provider


def _check_endpoints(provider: str, config: dict[str, Any], settings: Any) -> None:
    if (
        provider == "sms_http"
        and config["url"].startswith("http://")
        and not settings.insecure_endpoints()
    ):
        raise InvalidInput("must be an https URL", field="config.url")


def _announce(
    request: Request, producer: ProducerDep, app_id: str, provider: str, action: str
) -> None:
    change = ConfigChanged(
        app_id=app_id,
        change_id=uuid.uuid4().hex,
        entity="provider",
        entity_id=provider,
        action=action,  # type: ignore[arg-type]
        ts=datetime.now(UTC),
    )

    async def publish() -> None:
        invalidate_everywhere(app_id)
        await producer.publish(change)

    after_commit(request, publish)


@router.get("", operation_id="list_provider_credentials")
async def list_credentials(app_id: AdminAppDep, session: SessionDep) -> CredentialList:
    """The app's providers: config and metadata only, never a secret."""
    rows = await credentials_store.list_for_app(session, app_id=app_id)
    return CredentialList(items=[_read(r) for r in rows])


@router.get("/{provider}", operation_id="get_provider_credential")
async def get_credential(provider: str, app_id: AdminAppDep, session: SessionDep) -> CredentialRead:
    row = await credentials_store.get(session, app_id=app_id, provider=_provider(provider))
    if row is None:
        raise NotFound(f"no {provider} credentials", field="provider")
    return _read(row)


@router.put("/{provider}", operation_id="set_provider_credential")
async def set_credential(
    provider: str,
    body: CredentialSet,
    request: Request,
    response: Response,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
    settings: SettingsDep,
) -> CredentialRead:
    """Create or replace the provider's config and secret (201 when new). The secret
    is checked (a service account JSON with its RSA key, a P-256 .p8, a VAPID key)
    and sealed; it is never shown again. Sends use it within seconds."""
    config = credentials.parse_config(_provider(provider), body.config)
    _check_endpoints(provider, config, settings)
    checked = credentials.check(provider, config, body.secret)
    row, created = await credentials_store.put(
        session, app_id=app_id, checked=checked, sealer=_sealer(settings), enabled=body.enabled
    )
    response.status_code = 201 if created else 200
    _announce(request, producer, app_id, provider, "created" if created else "updated")
    return _read(row)


@router.patch("/{provider}", operation_id="update_provider_credential")
async def update_credential(
    provider: str,
    body: CredentialUpdate,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
    settings: SettingsDep,
) -> CredentialRead:
    """Change the config (merged into the stored one; ``null`` restores a default) or
    turn the provider off and on, keeping the secret. The metadata of providers that
    derive it from the secret alone (FCM, APNs, web push) is recomputed from the
    config without opening the secret."""
    row = await credentials_store.get(
        session, app_id=app_id, provider=_provider(provider), for_update=True
    )
    if row is None:
        raise NotFound(f"no {provider} credentials", field="provider")
    config = metadata = None
    if body.config is not None:
        merged = {k: v for k, v in {**row.config, **body.config}.items() if v is not None}
        config = credentials.parse_config(provider, merged)
        _check_endpoints(provider, config, settings)
        metadata = credentials.metadata_after_config_change(provider, dict(row.metadata_), config)
    await credentials_store.update(
        session, row=row, config=config, metadata=metadata, enabled=body.enabled
    )
    _announce(request, producer, app_id, provider, "updated")
    return _read(row)


@router.post("/{provider}/rotate", operation_id="rotate_provider_secret")
async def rotate_secret(
    provider: str,
    body: SecretRotation,
    request: Request,
    app_id: AdminAppDep,
    session: SessionDep,
    producer: ProducerDep,
    settings: SettingsDep,
) -> CredentialRead:
    """Replace the secret, keeping the config (a new service account key, a new .p8,
    a new API key). Sends use the new one within seconds."""
    row = await credentials_store.get(
        session, app_id=app_id, provider=_provider(provider), for_update=True
    )
    if row is None:
        raise NotFound(f"no {provider} credentials", field="provider")
    checked = credentials.check(provider, dict(row.config), body.secret)
    sealer = _sealer(settings)
    sealed = sealer.seal(checked.secret, app_id=app_id, provider=provider)
    await credentials_store.update(
        session, row=row, metadata=checked.metadata, sealed=(sealed, sealer.key_id)
    )
    _announce(request, producer, app_id, provider, "updated")
    return _read(row)


@router.delete("/{provider}", status_code=204, operation_id="delete_provider_credential")
async def delete_credential(
    provider: str, request: Request, app_id: AdminAppDep, session: SessionDep, producer: ProducerDep
) -> Response:
    """Forget the provider's credentials: its sends stop (log fallback or
    ``no_provider``) within seconds."""
    row = await credentials_store.get(
        session, app_id=app_id, provider=_provider(provider), for_update=True
    )
    if row is None:
        raise NotFound(f"no {provider} credentials", field="provider")
    await credentials_store.delete(session, row=row)
    _announce(request, producer, app_id, provider, "deleted")
    return Response(status_code=204)
