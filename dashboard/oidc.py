"""Sign-in through the company's OpenID Connect provider (``OIDC_*`` settings), with mozilla-django-oidc.

- ``provider_metadata``: the provider's discovery document (``<OIDC_ISSUER>/.well-known/openid-configuration``), read
  at the first sign-in rather than at start (so the dashboard starts while the provider is away), kept for an hour;
  its ``issuer`` must be exactly ``OIDC_ISSUER``.
- ``ProviderBackend``: the authorization code flow's last step. The ID token is checked in full here (RS256 against
  the provider's JWKS, issuer and audience exactly, expiry, nonce); mozilla-django-oidc checks neither issuer nor
  audience itself. People are found by the provider's ``sub`` (``SignInIdentity``), never by e-mail, and their role
  is set from ``OIDC_ROLE_CLAIM`` through ``OIDC_ROLE_MAP`` at every sign-in.
- ``SignInRefused``: what went wrong, in words safe to show and log (never a token or the client secret).

The views that start and finish the flow live in ``dashboard.signin``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.utils.crypto import constant_time_compare
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from dashboard.models import SignInIdentity
from dashboard.permissions import Role

logger = logging.getLogger("dashboard.signin")

METADATA_MAX_AGE_SECONDS = 3600
# Clocks of the provider and the dashboard may differ by a few seconds.
CLOCK_LEEWAY_SECONDS = 10
SIGNING_ALGORITHM = "RS256"


class SignInRefused(Exception):
    """A sign-in through the provider that did not go through; ``str()`` is safe to show and to log."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str


_metadata: dict[str, tuple[float, ProviderMetadata]] = {}
_metadata_lock = threading.Lock()


def provider_name() -> str:
    return str(settings.OIDC_PROVIDER_NAME or urlsplit(str(settings.OIDC_ISSUER)).hostname or "")


def provider_metadata() -> ProviderMetadata:
    """The configured provider's endpoints, from its discovery document (read again after an hour)."""
    issuer = str(settings.OIDC_ISSUER)
    with _metadata_lock:
        cached = _metadata.get(issuer)
        if cached is not None and time.monotonic() - cached[0] < METADATA_MAX_AGE_SECONDS:
            return cached[1]
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        answer = httpx.get(url, timeout=settings.OIDC_TIMEOUT, follow_redirects=False)
        answer.raise_for_status()
        document = answer.json()
    except (httpx.HTTPError, ValueError) as error:
        raise SignInRefused(
            f"The identity provider's discovery document at {url} could not be read ({type(error).__name__}).",
            status=502,
        ) from None
    if not isinstance(document, dict):
        raise SignInRefused(
            f"The identity provider's discovery document at {url} is not a JSON object.", status=502
        )
    if document.get("issuer") != issuer:
        raise SignInRefused(
            f"The identity provider at {url} names its issuer {str(document.get('issuer'))[:200]!r}; "
            f"OIDC_ISSUER is {issuer!r} and must be exactly that.",
            status=502,
        )
    fields = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")
    missing = [name for name in fields if not isinstance(document.get(name), str)]
    if missing:
        raise SignInRefused(
            f"The identity provider's discovery document lacks {', '.join(missing)}.", status=502
        )
    algorithms = document.get("id_token_signing_alg_values_supported")
    if isinstance(algorithms, list) and SIGNING_ALGORITHM not in algorithms:
        raise SignInRefused(
            f"The identity provider does not sign ID tokens with {SIGNING_ALGORITHM}.", status=502
        )
    metadata = ProviderMetadata(issuer=issuer, **{name: document[name] for name in fields})
    with _metadata_lock:
        _metadata[issuer] = (time.monotonic(), metadata)
    return metadata


def groups_in(claims: dict[str, Any]) -> list[str]:
    """The values of ``OIDC_ROLE_CLAIM``: a claim of that exact name, else a dotted path (``realm_access.roles``)."""
    name = str(settings.OIDC_ROLE_CLAIM)
    value: Any = claims.get(name)
    if value is None and "." in name:
        value = claims
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def role_for(claims: dict[str, Any]) -> Role | None:
    """The highest role ``OIDC_ROLE_MAP`` gives the person's groups, or None."""
    role_map: dict[str, str] = settings.OIDC_ROLE_MAP
    roles = [Role[role_map[group].upper()] for group in groups_in(claims) if group in role_map]
    return max(roles, default=None)


def _held_role(user: Any) -> Role | None:
    names = set(user.groups.values_list("name", flat=True))
    return max((role for role in Role if role.group_name in names), default=None)


def _set_role(user: Any, role: Role | None) -> None:
    groups = {role.group_name: Group.objects.get_or_create(name=role.group_name)[0] for role in Role}
    user.groups.remove(*[group for name, group in groups.items() if role is None or name != role.group_name])
    if role is not None:
        user.groups.add(groups[role.group_name])


class ProviderBackend(OIDCAuthenticationBackend):
    """Signs a person in from the provider's answer; see the module docstring for what is checked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The endpoints come from discovery when a sign-in arrives, not from settings at construction: Django
        # builds backends for every password sign-in too, which must not depend on the provider.
        self.UserModel = get_user_model()
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = SIGNING_ALGORITHM
        self.OIDC_RP_IDP_SIGN_KEY = None

    get_user = ModelBackend.get_user  # an inactive account's session ends (the library's own does not check)

    def authenticate(self, request: Any, **kwargs: Any) -> Any:
        # Only the callback view passes a nonce; every other sign-in (the password form) is not ours.
        if request is None or "nonce" not in kwargs or not settings.OIDC_ISSUER:
            return None
        metadata = provider_metadata()
        self.OIDC_OP_TOKEN_ENDPOINT = metadata.token_endpoint
        self.OIDC_OP_USER_ENDPOINT = metadata.userinfo_endpoint
        self.OIDC_OP_JWKS_ENDPOINT = metadata.jwks_uri
        try:
            user = super().authenticate(request, **kwargs)
        except requests.RequestException as error:
            raise SignInRefused(
                f"The identity provider could not be reached ({type(error).__name__}).", status=502
            ) from None
        except SuspiciousOperation as error:
            raise SignInRefused(f"The identity provider's answer did not check out: {error}") from None
        if user is None:
            raise SignInRefused("The identity provider's answer did not sign anyone in.")
        return user

    def raise_token_response_error(self, response: Any) -> None:
        if response.status_code == 200:
            return
        try:
            code = str(response.json().get("error", ""))[:100]
        except (ValueError, AttributeError):
            code = ""
        raise SignInRefused(
            f"The identity provider refused the sign-in code (HTTP {response.status_code}{', ' + code if code else ''})."
        )

    def verify_token(self, token: Any, **kwargs: Any) -> dict[str, Any]:
        if "nonce" not in kwargs:
            raise SignInRefused(
                "The identity provider answered user information as a signed token, which is not read."
            )
        if not isinstance(token, str):
            raise SignInRefused("The identity provider sent no ID token.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise SignInRefused("The ID token is not a signed token.") from None
        if header.get("alg") != SIGNING_ALGORITHM:
            raise SignInRefused(
                f"The ID token is signed with {str(header.get('alg'))[:20]!r}, not {SIGNING_ALGORITHM}."
            )
        key = self.retrieve_matching_jwk(token)
        issuer = str(settings.OIDC_ISSUER)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[SIGNING_ALGORITHM],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=issuer,
                leeway=CLOCK_LEEWAY_SECONDS,
                options={"require": ["iss", "aud", "exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise SignInRefused("The ID token has expired.") from None
        except jwt.InvalidIssuerError:
            raise SignInRefused(f"The ID token was not issued by {issuer}.") from None
        except jwt.InvalidAudienceError:
            raise SignInRefused("The ID token is not meant for this dashboard (its audience).") from None
        except jwt.InvalidTokenError as error:
            raise SignInRefused(f"The ID token did not check out ({type(error).__name__}).") from None
        audience = claims["aud"]
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != self.OIDC_RP_CLIENT_ID:
            raise SignInRefused("The ID token is not meant for this dashboard (its authorized party).")
        if not constant_time_compare(str(claims.get("nonce", "")), str(kwargs["nonce"] or "")):
            raise SignInRefused("The ID token answers another sign-in (its nonce).")
        return claims

    def get_or_create_user(self, access_token: Any, id_token: Any, payload: dict[str, Any]) -> Any:
        userinfo = self.get_userinfo(access_token, id_token, payload)
        subject = str(payload["sub"])
        if not isinstance(userinfo, dict) or userinfo.get("sub") != subject:
            raise SignInRefused(
                "The identity provider's user information is about another account than its ID token."
            )
        claims = {**userinfo, **payload}
        role = role_for(claims)
        issuer = str(settings.OIDC_ISSUER)
        with transaction.atomic():
            identity = (
                SignInIdentity.objects.select_for_update()
                .select_related("user")
                .filter(issuer=issuer, subject=subject)
                .first()
            )
            if identity is None:
                if role is None:
                    raise SignInRefused(self._no_role(claims), status=403)
                user = self.UserModel.objects.create_user(self._free_username(claims, issuer, subject))
                identity = SignInIdentity.objects.create(user=user, issuer=issuer, subject=subject)
            user = identity.user
            held = _held_role(user)
            _set_role(user, role)
            email = claims.get("email")
            if isinstance(email, str) and email != user.email and len(email) <= 254:
                user.email = email
                user.save(update_fields=["email"])
        if held != role:
            from dashboard import audit

            audit.record(
                user=user,
                action="role_from_provider",
                outcome="succeeded",
                sent={"role": role.group_name if role else "", "was": held.group_name if held else ""},
                via="page",
            )
            logger.info(
                "role of %s set from the identity provider: %s (was %s)", user.get_username(), role, held
            )
        if role is None:
            raise SignInRefused(self._no_role(claims), status=403)
        if not user.is_active:
            raise SignInRefused("This account is turned off on this dashboard.", status=403)
        return user

    def _no_role(self, claims: dict[str, Any]) -> str:
        return (
            f"You signed in at {provider_name()}, but none of your groups (claim {settings.OIDC_ROLE_CLAIM!r}) "
            "has a role on this dashboard. Ask the people who run it to add your group to its role map."
        )

    def _free_username(self, claims: dict[str, Any], issuer: str, subject: str) -> str:
        wanted = claims.get("preferred_username") or claims.get("email") or subject
        base = str(wanted)[:150]
        if not self.UserModel.objects.filter(username=base).exists():
            return base
        # A password account of that name is someone else as far as we know: never take it over.
        suffix = hashlib.sha256(f"{issuer} {subject}".encode()).hexdigest()[:12]
        return f"{base[:137]}-{suffix}"
