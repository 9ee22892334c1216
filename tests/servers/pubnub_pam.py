"""Access Manager for the local PubNub-protocol server: request signatures, tokens, permissions.

Pure functions of the keyset and the clock. The request signature is the SDK's
(`pubnub.utils.sign_request`), rebuilt here from what arrives on the wire: HMAC-SHA256 under the
secret key of `METHOD\\npub\\npath\\nsorted query\\nbody` ("v2.", urlsafe base64 without padding),
except a POST publish, which signs `sub\\npub\\npath\\nsorted query` (v1, padded). Query values
are decoded once and re-encoded as PubNub's signing encodes them. Tokens are a CBOR map (`v`,
`t`, `ttl`, `res`/`pat` with `chan`, `grp`, `uuid`, `usr`, `spc`, `meta`, `uuid`) with `sig`, an
HMAC of the map without it, as urlsafe base64 keeping the `=` padding (the SDK's `parse_token`
needs it). Permission bits are PubNub's: READ 1, WRITE 2, MANAGE 4, DELETE 8, CREATE 16, GET 32,
UPDATE 64, JOIN 128; a channel is granted by name or by a pattern (a regular expression).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any
from urllib.parse import quote, unquote

import cbor2

READ, WRITE, JOIN = 1, 2, 128
SIGNATURE_SKEW_SECONDS = 600
MAX_TTL_MINUTES = 43_200


def pam_encode(value: str) -> str:
    """PubNub's encoding of query values for signing: everything but letters, digits, `_.-`."""
    return quote(value, safe="").replace("~", "%7E")


def query_params(raw_query: str) -> dict[str, str]:
    """The query as sent, each value decoded once (what the SDK signed)."""
    pairs = (item.partition("=") for item in raw_query.split("&") if item)
    return {key: unquote(value) for key, _, value in pairs}


def _sign(secret: str, text: str) -> str:
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()


def signature_valid(
    *,
    secret: str,
    publish_key: str,
    subscribe_key: str,
    method: str,
    raw_path: str,
    raw_query: str,
    body: bytes,
    now: float,
) -> bool:
    """Whether the request carries the SDK's signature under `secret`, made within the skew."""
    params = query_params(raw_query)
    signature = params.pop("signature", "")
    try:
        stamp = int(params.get("timestamp", ""))
    except ValueError:
        return False
    if abs(now - stamp) > SIGNATURE_SKEW_SECONDS:
        return False
    query = "&".join(f"{key}={pam_encode(params[key])}" for key in sorted(params))
    if method == "POST" and raw_path.startswith("/publish"):
        expected = _sign(secret, f"{subscribe_key}\n{publish_key}\n{raw_path}\n{query}")
    else:
        signed = f"{method}\n{publish_key}\n{raw_path}\n{query}\n{body.decode()}"
        expected = "v2." + _sign(secret, signed).rstrip("=")
    return hmac.compare_digest(signature, expected)


def mint_token(secret: str, ttl: int, permissions: dict[str, Any], now: float) -> str:
    """A token granting `permissions` (the grant request's shape) for `ttl` minutes from now."""

    def section(part: dict[str, Any]) -> dict[str, dict[str, int]]:
        return {
            "chan": dict(part.get("channels", {})),
            "grp": dict(part.get("groups", {})),
            "uuid": dict(part.get("uuids", {})),
            "usr": dict(part.get("users", {})),
            "spc": dict(part.get("spaces", {})),
        }

    body: dict[str, Any] = {
        "v": 2,
        "t": int(now),
        "ttl": ttl,
        "res": section(permissions.get("resources", {})),
        "pat": section(permissions.get("patterns", {})),
        "meta": permissions.get("meta") or {},
    }
    if permissions.get("uuid"):
        body["uuid"] = permissions["uuid"]
    signature = hmac.new(secret.encode(), cbor2.dumps(body), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(cbor2.dumps({**body, "sig": signature})).decode()


def read_token(secret: str, token: str, now: float) -> tuple[dict[str, Any] | None, str]:
    """The token's grants if `secret` signed it and it has not expired; else (None, why not)."""
    try:
        body = cbor2.loads(base64.urlsafe_b64decode(token))
        signature = body.pop("sig")
    except Exception:  # any malformed token is simply not a token
        return None, "Invalid token"
    expected = hmac.new(secret.encode(), cbor2.dumps(body), hashlib.sha256).digest()
    if not isinstance(signature, bytes) or not hmac.compare_digest(signature, expected):
        return None, "Invalid token signature"
    if body["t"] + body["ttl"] * 60 < now:
        return None, "Token is expired."
    return body, ""


def allowed(grants: dict[str, Any], channel: str, bit: int) -> bool:
    """Whether the token grants `bit` on `channel`, by name or by pattern."""
    if grants["res"]["chan"].get(channel, 0) & bit:
        return True
    return any(
        mask & bit and re.fullmatch(pattern, channel)
        for pattern, mask in grants["pat"]["chan"].items()
    )
