"""Submit-time checks of a run's ``callback`` and ``github`` (422 before anything is stored)."""

from __future__ import annotations

from typing import Any

from flask_smorest import abort

from shared.config import Settings
from shared.secrets import SecretError, provider_for
from shared.webhooks.endpoints import CallbackError, resolve
from shared.webhooks.ssrf import AllowList, UnsafeURL, check_url


def _refuse(field: str, message: str) -> None:
    abort(422, message=f"{field}: {message}", errors={"json": {field: [message]}})


def check_targets(settings: Settings, body: dict[str, Any]) -> None:
    """Refuse (422) a callback that names no allowed target or a non-public address, and a
    ``github`` block when the server has no GitHub token. Nothing is sent to the target."""
    callback = body.get("callback")
    if callback:
        try:
            target = resolve(settings, callback)
            check_url(
                target.url,
                allow_http=settings.webhook_allow_http,
                allow=AllowList.parse(settings.webhook_allowed_networks),
            )
            provider_for(settings).get(target.secret_ref)
        except (CallbackError, UnsafeURL) as exc:
            _refuse("callback", str(exc))
        except SecretError:
            _refuse("callback", "secretRef cannot be resolved on the server")
    if body.get("github") and not settings.github_token_ref:
        _refuse("github", "commit statuses are not configured on this server")
