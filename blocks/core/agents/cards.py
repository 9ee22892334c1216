"""The rules of an A2A v1.0 agent card that its protobuf types cannot say, and the card Blocks serves.

The SDK's types (`a2a.types.AgentCard`, checked in `blocks.infra.agents.cards`) refuse unknown
fields and wrong types and carry the spec's REQUIRED marks; what is left is here, pure, on the
card's JSON (camelCase, as `MessageToDict` writes it): skill ids unique in the card and usable as
names (tokens, workflows and task rows name them), input and output modes that are media types,
exactly one type per security scheme, security requirements that name declared schemes, absolute
URLs, and sizes. Each refusal names the field (`card.skills[1].id`) and the reason.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

MAX_SKILLS = 100
MAX_INTERFACES = 20
MAX_SECURITY_SCHEMES = 20
# A skill id is what a workflow's agent step and a token's scope name (agent_tasks.skill is 200).
SKILL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
# `type/subtype` with optional parameters, wildcards allowed (`text/*`, `*/*`).
MEDIA_TYPE = re.compile(r"^[A-Za-z0-9*][\w!#$&^.+*-]*/[\w!#$&^.+*-]+(\s*;.*)?$")
PROTOCOL_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")
# How Blocks names itself in the card it serves: tasks reach the agent only through Blocks.
RELAY_BINDING = "BLOCKS-RELAY"
PUBNUB_BINDING = "BLOCKS-PUBNUB"
SERVED_PROTOCOL_VERSION = "1.0"


class CardError(ValueError):
    """A card refused: `field` is its path from the card (`card.skills[0].tags`)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def skill_ids(card: dict[str, Any]) -> list[str]:
    """The ids of the skills a (checked) card declares, in its order."""
    return [s["id"] for s in card.get("skills", []) if isinstance(s, dict) and "id" in s]


def check_card_rules(card: dict[str, Any]) -> None:
    """Raise CardError for the first rule the card (already parsed by the SDK) breaks."""
    for problem in _problems(card):
        raise problem


def _problems(card: dict[str, Any]) -> Iterator[CardError]:
    skills = card.get("skills", [])
    if len(skills) > MAX_SKILLS:
        yield CardError("card.skills", f"at most {MAX_SKILLS} skills")
    interfaces = card.get("supportedInterfaces", [])
    if len(interfaces) > MAX_INTERFACES:
        yield CardError("card.supportedInterfaces", f"at most {MAX_INTERFACES} interfaces")
    for index, interface in enumerate(interfaces):
        where = f"card.supportedInterfaces[{index}]"
        yield from _url(f"{where}.url", interface.get("url"), schemes=None)
        version = interface.get("protocolVersion", "")
        if not PROTOCOL_VERSION.match(version):
            yield CardError(f"{where}.protocolVersion", "must be a version such as 1.0")
    for name in ("documentationUrl", "iconUrl"):
        if name in card:
            yield from _url(f"card.{name}", card[name], schemes=("http", "https"))
    if "provider" in card:
        yield from _url("card.provider.url", card["provider"].get("url"), ("http", "https"))
    yield from _modes("card.defaultInputModes", card.get("defaultInputModes", []))
    yield from _modes("card.defaultOutputModes", card.get("defaultOutputModes", []))
    schemes = card.get("securitySchemes", {})
    if len(schemes) > MAX_SECURITY_SCHEMES:
        yield CardError("card.securitySchemes", f"at most {MAX_SECURITY_SCHEMES} schemes")
    for name, scheme in schemes.items():
        if len(scheme) != 1:
            yield CardError(
                f"card.securitySchemes.{name}",
                "must set exactly one scheme type (apiKeySecurityScheme, "
                "httpAuthSecurityScheme, oauth2SecurityScheme, openIdConnectSecurityScheme or "
                "mtlsSecurityScheme)",
            )
    yield from _requirements("card.securityRequirements", card, schemes)
    seen: dict[str, int] = {}
    for index, skill in enumerate(skills):
        where = f"card.skills[{index}]"
        skill_id = skill.get("id", "")
        if not SKILL_ID.match(skill_id):
            yield CardError(
                f"{where}.id",
                "must be 1 to 200 letters, digits or _ . : - (starting with a letter or digit)",
            )
        elif skill_id in seen:
            yield CardError(f"{where}.id", f"{skill_id!r} is also card.skills[{seen[skill_id]}]")
        seen.setdefault(skill_id, index)
        yield from _modes(f"{where}.inputModes", skill.get("inputModes", []))
        yield from _modes(f"{where}.outputModes", skill.get("outputModes", []))
        yield from _requirements(f"{where}.securityRequirements", skill, schemes)


def _url(field: str, value: Any, schemes: tuple[str, ...] | None) -> Iterator[CardError]:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or not parts.scheme or not parts.netloc:
        yield CardError(field, "must be an absolute URL")
    elif schemes is not None and parts.scheme not in schemes:
        yield CardError(field, f"must be an {' or '.join(schemes)} URL")


def _modes(field: str, modes: list[str]) -> Iterator[CardError]:
    for index, mode in enumerate(modes):
        if not MEDIA_TYPE.match(mode):
            yield CardError(f"{field}[{index}]", "must be a media type such as text/plain")


def _requirements(
    field: str, holder: dict[str, Any], schemes: dict[str, Any]
) -> Iterator[CardError]:
    for index, requirement in enumerate(holder.get("securityRequirements", [])):
        for name in requirement.get("schemes", {}):
            if name not in schemes:
                yield CardError(
                    f"{field}[{index}].schemes.{name}",
                    "names no scheme declared in card.securitySchemes",
                )


def served_card(card: dict[str, Any], *, url: str, transport: str) -> dict[str, Any]:
    """The card as Blocks serves it at the agent's well-known URL: the agent is reached only
    through Blocks (it has no inbound address), so its one interface names Blocks' endpoint for
    the transport; the agent's own signatures, which covered its own interfaces, are dropped."""
    served = copy.deepcopy(card)
    served.pop("signatures", None)
    served["supportedInterfaces"] = [
        {
            "url": url,
            "protocolBinding": PUBNUB_BINDING if transport == "pubnub" else RELAY_BINDING,
            "protocolVersion": SERVED_PROTOCOL_VERSION,
        }
    ]
    return served
