"""The OpenAPI document's examples: `example(...)` puts one on a model, and the ids and times
they share tell one story (Acme's expense approved by Alan), so the examples agree with each other.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict


def example(**values: Any) -> ConfigDict:
    """A model's `model_config` naming one example of its JSON (merged with its base's config)."""
    return ConfigDict(json_schema_extra={"examples": [values]})


ORG_ID = "0b6f3c9e-4a57-4d8e-9a43-5f1c2d7e8a10"
ORG_SLUG = "acme"
ORG_NAME = "Acme Corp"
OWNER_ID = "5d2c8f1a-9b3e-4c7d-8e6f-1a2b3c4d5e6f"  # Ada, the owner
OWNER_EMAIL = "ada@acme.example"
OPERATOR_ID = "7e4a1b2c-3d5f-4a6b-9c8d-0e1f2a3b4c5d"  # Grace, who starts runs
OPERATOR_EMAIL = "grace@acme.example"
APPROVER_ID = "9f8e7d6c-5b4a-4392-8a1b-0c9d8e7f6a5b"  # Alan, who approves
APPROVER_EMAIL = "alan@acme.example"
RUN_ID = "3c1d9e2f-7a6b-4c5d-8e9f-0a1b2c3d4e5f"
SESSION_ID = "c4b3a291-8f7e-4d6c-9b5a-4e3d2c1b0a99"
KEY_ID = "e1d2c3b4-a5f6-4789-8abc-def012345678"
INVITE_ID = "a9b8c7d6-e5f4-4321-9876-543210fedcba"
GROUP_ID = "2b4d6f8a-1c3e-4a5b-8c7d-9e0f1a2b3c4d"
DELEGATION_ID = "6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d"
EVENT_ID = "0f1e2d3c-4b5a-4697-8877-665544332211"
CREATED = "2025-03-03T09:00:00Z"
STARTED = "2025-03-04T09:15:00Z"
DECIDED = "2025-03-04T10:02:41Z"
DEADLINE = "2025-03-05T09:15:00Z"
LATER = "2025-06-04T09:15:00Z"
HASH = "9c1185a5c5e9fc54612808977ee8f548b2258d31c6d7a4a8f3e1b6d2c7a9f0e4"
PREV_HASH = "4a44dc15364204a80fe80e9039455cc1608281820fe2b24f1e5233ade6af1dd5"
SIGNATURE = (
    "ZgqN8GwSWbOTvNYsrvRAs1pC8zWPgnIbavRQe5Sgnsg8Ly8TYu4bsqaeBkaBVcQKvfSS2pmE8VkxNhfzJOUzAQ=="
)
PUBLIC_KEY = "ZV88JubOxWQJa+8DYPsUlQ0ft82SkIzZsJswHh9lc/E="
PUBLIC_KEY_X = "ZV88JubOxWQJa-8DYPsUlQ0ft82SkIzZsJswHh9lc_E"
SIGNING_KEY_ID = "audit-2025-03"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
EXPENSE = {"amount": "120.50", "currency": "EUR", "description": "Team lunch"}
# Made-up secrets of the examples, in the shapes Blocks issues them; none works anywhere.
PASSWORD = "correct horse battery staple"  # noqa: S105
NEW_PASSWORD = "a much longer passphrase, 2025"  # noqa: S105
API_KEY = "blk_8d3e2f1a0b9c7d6e_Jq4sV7yX0zB3cE6fH9iK2lM5nP8rT1uW4xA7bD0eG3h"
SIGN_IN_TOKEN = "bsi_3f9a1c2b7d4e8f60_Qm9ja3MgaXMgZHVyYWJsZSB3b3JrZmxvd3MgYW5kIGF1ZA"  # noqa: S105
INVITE_TOKEN = "inv_51c0d9e8f7a6b5c4_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0Ed9Cb8Az7Yx6W"  # noqa: S105
RESET_TOKEN = "brs_0a1b2c3d4e5f6789_Pq7Rs8Tu9Vw0Xy1Za2Bc3De4Fg5Hi6Jk7Lm8No9Pq0Rs1"  # noqa: S105
EMAIL_TOKEN = "bec_9f8e7d6c5b4a3928_Mn1Op2Qr3St4Uv5Wx6Yz7Ab8Cd9Ef0Gh1Ij2Kl3Mn4Op5"  # noqa: S105
TOTP_SECRET = "FHCPBHNJGWAC2YOXAUTRTBKZXCYDDDJE"  # noqa: S105
BACKUP_CODES = ["xw6e-t2le-nf3p-2slu", "7tpu-7wrm-tyvl-b6wj", "pahk-zjuh-lbgv-whja"]
SLACK_BOT_TOKEN = "xoxb-example-not-a-real-token"  # noqa: S105
