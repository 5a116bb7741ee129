"""Per-app provider credentials: what each provider takes, and how secrets are sealed.

No I/O here. The table and its repo functions are in ``credentials_store.py``, the
write-only admin endpoints in ``credentials_api.py``.

**Sealing (envelope encryption).** The master key (``HODHOD_DISPATCHER_SECRETS_KEY``,
32 random bytes, base64url) is an X25519 private key; only the dispatcher holds it.
Each secret gets its own random data key (AES-256-GCM) and the data key is wrapped for
the master key's *public* half (an ephemeral X25519 agreement, HKDF-SHA256, AES-GCM).
So sealing needs only the public key — whatever writes credentials can be given just
that and can never read one back — and a master-key rotation re-wraps data keys
without touching ciphertexts. Both layers bind the app id and provider name as
associated data: a sealed secret copied to another row does not open.

Format: ``v1.<key id>.<ephemeral public>.<wrap nonce>.<wrapped key>.<nonce>.<ciphertext>``
(base64url parts; the key id is the first 8 bytes of SHA-256 of the public key, hex).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from libs.runtime.errors import InvalidInput
from libs.runtime.settings import DEV_SECRETS_KEY, DispatcherSettings

ProviderName = Literal["fcm", "apns", "webpush", "kavenegar", "sms_http", "smtp"]
PROVIDERS: tuple[str, ...] = ("fcm", "apns", "webpush", "kavenegar", "sms_http", "smtp")
CHANNEL_OF = {
    "fcm": "push",
    "apns": "push",
    "webpush": "web_push",
    "kavenegar": "sms",
    "sms_http": "sms",
    "smtp": "email",
}
INFO = b"hodhod provider credentials v1"
MAX_SECRET = 16_384


class SecretsKeyError(ValueError):
    """The master key is missing, malformed, a placeholder outside development, or
    not the key a sealed secret was made for."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _aad(app_id: str, provider: str) -> bytes:
    return json.dumps(["hodhod-credential", app_id, provider]).encode()


def key_id(public: X25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def new_master_key() -> str:
    """A fresh master key, as ``HODHOD_DISPATCHER_SECRETS_KEY`` takes it."""
    return _b64(os.urandom(32))


def _private(text: str) -> X25519PrivateKey:
    if text == DEV_SECRETS_KEY:
        raw = hashlib.sha256(text.encode()).digest()
    else:
        try:
            raw = _unb64(text.strip())
        except (ValueError, TypeError):
            raw = b""
        if len(raw) != 32:
            raise SecretsKeyError(
                "HODHOD_DISPATCHER_SECRETS_KEY must be 32 random bytes in base64url "
                "(hodhod secrets-key makes one)"
            )
    return X25519PrivateKey.from_private_bytes(raw)


class Sealer:
    """Seals secrets for one master public key. Holds nothing that can open them."""

    def __init__(self, public: X25519PublicKey) -> None:
        self._public = public
        self.key_id = key_id(public)

    def seal(self, plaintext: str, *, app_id: str, provider: str) -> str:
        aad = _aad(app_id, provider)
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(12)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext.encode(), aad)
        ephemeral = X25519PrivateKey.generate()
        epk = ephemeral.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        wrap_key = _wrap_key(ephemeral.exchange(self._public), epk, self._public)
        wrap_nonce = os.urandom(12)
        wrapped = AESGCM(wrap_key).encrypt(wrap_nonce, data_key, aad)
        parts = [epk, wrap_nonce, wrapped, nonce, ciphertext]
        return ".".join(["v1", self.key_id, *(_b64(p) for p in parts)])


def _wrap_key(shared: bytes, epk: bytes, public: X25519PublicKey) -> bytes:
    pk = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + pk, info=INFO).derive(shared)


class Keyring:
    """The dispatcher's master keys: the current one (sealing and opening) and older
    ones (opening only, until their secrets are re-wrapped)."""

    def __init__(
        self, current: X25519PrivateKey, older: list[X25519PrivateKey] | None = None
    ) -> None:
        self._current = current
        self._keys = {key_id(k.public_key()): k for k in [*(older or []), current]}
        self.sealer = Sealer(current.public_key())

    @property
    def key_id(self) -> str:
        return self.sealer.key_id

    @classmethod
    def from_settings(cls, settings: DispatcherSettings) -> Keyring:
        """Raises SecretsKeyError for a malformed key, or for the development
        placeholder outside development."""
        current = settings.dispatcher_secrets_key.get_secret_value()
        if current == DEV_SECRETS_KEY and settings.environment != "development":
            raise SecretsKeyError(
                "HODHOD_DISPATCHER_SECRETS_KEY is the development placeholder; set a real key "
                f"outside development (environment={settings.environment})"
            )
        older = [k for k in settings.dispatcher_secrets_old_keys.get_secret_value().split(",") if k]
        return cls(_private(current), [_private(k) for k in older])

    def open(self, sealed: str, *, app_id: str, provider: str) -> str:
        """The plaintext of ``sealed``; raises SecretsKeyError when no key here opens it
        or it was sealed for another app or provider."""
        parts = sealed.split(".")
        if len(parts) != 7 or parts[0] != "v1":
            raise SecretsKeyError("not a sealed credential")
        private = self._keys.get(parts[1])
        if private is None:
            raise SecretsKeyError(f"sealed with master key {parts[1]}, which this keyring lacks")
        epk, wrap_nonce, wrapped, nonce, ciphertext = (_unb64(p) for p in parts[2:])
        aad = _aad(app_id, provider)
        wrap_key = _wrap_key(
            private.exchange(X25519PublicKey.from_public_bytes(epk)), epk, private.public_key()
        )
        try:
            data_key = AESGCM(wrap_key).decrypt(wrap_nonce, wrapped, aad)
            return AESGCM(data_key).decrypt(nonce, ciphertext, aad).decode()
        except InvalidTag:
            raise SecretsKeyError(
                "the sealed credential does not open for this app and provider"
            ) from None

    def rewrap(self, sealed: str, *, app_id: str, provider: str) -> str:
        """``sealed`` under the current key (after a master-key rotation)."""
        return self.sealer.seal(
            self.open(sealed, app_id=app_id, provider=provider), app_id=app_id, provider=provider
        )


# --- what each provider takes ---------------------------------------------------------
# ``config`` is stored in clear and shown to admins; ``secret`` is sealed and never
# shown again. ``metadata`` (what the admin API answers) is derived from both at write
# time, so reading never needs the master key.


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FcmConfig(_Config):
    # Another project than the service account's (rare: a shared sender account).
    project_id: str | None = Field(default=None, max_length=100)
    android_channel_id: str | None = Field(default=None, max_length=100)


class ApnsConfig(_Config):
    key_id: str = Field(pattern=r"^[A-Z0-9]{10}$")
    team_id: str = Field(pattern=r"^[A-Z0-9]{10}$")
    topic: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.\-]+$")
    environment: Literal["production", "sandbox"] = "production"


class WebPushConfig(_Config):
    subject: str = Field(min_length=8, max_length=255)

    @field_validator("subject")
    @classmethod
    def _contact(cls, value: str) -> str:
        if not value.startswith(("mailto:", "https://")):
            raise ValueError("must be a mailto: or https: URL where the push service can reach you")
        return value


class KavenegarConfig(_Config):
    sender: str | None = Field(default=None, pattern=r"^[0-9]{4,20}$")


class SmsHttpConfig(_Config):
    url: str = Field(min_length=8, max_length=2048)
    method: Literal["POST", "GET", "PUT"] = "POST"
    body: dict[str, Any] = Field(default_factory=lambda: {"to": "{to}", "text": "{text}"})
    body_format: Literal["json", "form"] = "json"
    headers: dict[str, str] = Field(default_factory=lambda: {"Authorization": "Bearer {secret}"})
    sender: str | None = Field(default=None, max_length=32)
    message_id_path: str | None = Field(default=None, max_length=200)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value


class SmtpConfig(_Config):
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(default=587, ge=1, le=65535)
    tls: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = Field(default=None, max_length=255)
    from_address: str = Field(pattern=r"^[^@\s<>]+@[^@\s<>]+$", max_length=255)
    from_name: str | None = Field(default=None, max_length=200)
    reply_to: str | None = Field(default=None, pattern=r"^[^@\s<>]+@[^@\s<>]+$", max_length=255)
    pool_size: int = Field(default=2, ge=1, le=20)


CONFIGS: dict[str, type[_Config]] = {
    "fcm": FcmConfig,
    "apns": ApnsConfig,
    "webpush": WebPushConfig,
    "kavenegar": KavenegarConfig,
    "sms_http": SmsHttpConfig,
    "smtp": SmtpConfig,
}
SECRET_HELP = {
    "fcm": "the service account JSON file Firebase gives (Project settings → Service accounts)",
    "apns": "the .p8 key file Apple gives (Keys → Apple Push Notifications service)",
    "webpush": "the VAPID private key (PEM, or the base64url key web-push tools print)",
    "kavenegar": "the API key of the Kavenegar account",
    "sms_http": "the gateway's token, substituted for {secret} in headers, body or URL",
    "smtp": "the SMTP password",
}


@dataclass(frozen=True, slots=True)
class Checked:
    """A validated credential: its config (stored in clear), its metadata (shown) and
    the secret (to seal)."""

    provider: str
    config: dict[str, Any]
    metadata: dict[str, Any]
    secret: str


def parse_config(provider: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The provider's config, validated; raises InvalidInput naming ``config.<field>``."""
    if provider not in CONFIGS:
        raise InvalidInput(
            f"unknown provider {provider}; one of {', '.join(PROVIDERS)}", field="provider"
        )
    try:
        return CONFIGS[provider].model_validate(raw).model_dump(mode="json")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(first["msg"], field=f"config.{where}" if where else "config") from None


def last4(secret: str) -> str:
    return secret.strip()[-4:] if len(secret.strip()) >= 12 else ""


def check(provider: str, config: dict[str, Any], secret: str) -> Checked:
    """Validate ``secret`` against ``config`` (already parsed) and derive the metadata
    shown to admins. Raises InvalidInput naming ``secret`` or ``config.<field>``; the
    message never contains the secret."""
    if not secret or len(secret) > MAX_SECRET:
        raise InvalidInput(
            f"must be {SECRET_HELP[provider]} (at most {MAX_SECRET} characters)", field="secret"
        )
    metadata: dict[str, Any] = {}
    if provider == "fcm":
        try:
            info = json.loads(secret)
        except json.JSONDecodeError:
            raise InvalidInput(f"must be {SECRET_HELP['fcm']}", field="secret") from None
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise InvalidInput(
                "must be a service account JSON (type service_account)", field="secret"
            )
        for name in ("project_id", "private_key", "client_email", "private_key_id"):
            if not isinstance(info.get(name), str) or not info[name]:
                raise InvalidInput(f"the service account JSON has no {name}", field="secret")
        _private_key(info["private_key"], rsa.RSAPrivateKey, "an RSA private key")
        metadata = {
            "project_id": config.get("project_id") or info["project_id"],
            "service_account_project_id": info["project_id"],
            "client_email": info["client_email"],
            "private_key_id_last4": info["private_key_id"][-4:],
        }
    elif provider == "apns":
        key = _private_key(secret, ec.EllipticCurvePrivateKey, "a P-256 EC private key (.p8)")
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        if key.curve.name != "secp256r1":
            raise InvalidInput("must be a P-256 key (.p8)", field="secret")
        metadata = {k: config[k] for k in ("key_id", "team_id", "topic", "environment")}
    elif provider == "webpush":
        from services.dispatcher.providers.webpush import load_vapid, public_key

        try:
            vapid = load_vapid(secret)
        except ValueError:
            raise InvalidInput(f"must be {SECRET_HELP['webpush']}", field="secret") from None
        metadata = {"subject": config["subject"], "public_key": public_key(vapid)}
    else:
        metadata = {k: v for k, v in config.items() if k not in ("body", "headers")}
        metadata["secret_last4"] = last4(secret)
    return Checked(provider, config, metadata, secret)


def metadata_after_config_change(
    provider: str, metadata: dict[str, Any], config: dict[str, Any]
) -> dict[str, Any]:
    """The metadata once ``config`` (parsed) replaces the stored config, keeping what
    came from the secret (so a config change never needs the master key)."""
    if provider == "fcm":
        project = config.get("project_id") or metadata.get("service_account_project_id")
        return {**metadata, "project_id": project}
    if provider == "apns":
        return {k: config[k] for k in ("key_id", "team_id", "topic", "environment")}
    if provider == "webpush":
        return {**metadata, "subject": config["subject"]}
    kept = {k: v for k, v in config.items() if k not in ("body", "headers")}
    return {**kept, "secret_last4": metadata.get("secret_last4", "")}


def _private_key(pem: str, kind: type, what: str) -> Any:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise InvalidInput(f"must hold {what} in PEM", field="secret") from None
    if not isinstance(key, kind):
        raise InvalidInput(f"must hold {what}", field="secret")
    return key
