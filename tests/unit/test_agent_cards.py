"""A2A v1.0 agent cards (infra.agents.cards over core.agents.cards): a card the a2a-sdk builds
passes and comes back as the SDK writes it; each card the SDK's types refuse, or that breaks a
rule the proto cannot say, is refused naming the field; the card Blocks serves names Blocks."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError

from blocks.core.agents.cards import CardError, served_card, skill_ids
from blocks.infra.agents.cards import MAX_CARD_BYTES, parse_card


def sdk_card(*skills: str, name: str = "Invoice reader") -> dict[str, Any]:
    """A card built with the SDK's own types, as JSON (MessageToDict)."""
    card = AgentCard(
        name=name,
        description="Reads supplier invoices",
        version="1.0.0",
        provider=AgentProvider(organization="Acme", url="https://acme.example"),
        supported_interfaces=[
            AgentInterface(
                url="https://invoices.acme.example/a2a",
                protocol_binding="JSONRPC",
                protocol_version="1.0",
            )
        ],
        capabilities=AgentCapabilities(streaming=False, push_notifications=False),
        default_input_modes=["application/json"],
        default_output_modes=["application/json", "text/plain"],
        skills=[
            AgentSkill(
                id=skill,
                name=f"Skill {skill}",
                description=f"Does {skill}",
                tags=["invoices"],
                examples=[f"{skill} invoice INV-1"],
                input_modes=["application/json"],
                output_modes=["application/json"],
                security_requirements=[
                    SecurityRequirement(schemes={"bearer": StringList(list=["invoices"])})
                ],
            )
            for skill in skills or ("extract",)
        ],
        security_schemes={
            "bearer": SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(scheme="Bearer")
            )
        },
        security_requirements=[SecurityRequirement(schemes={"bearer": StringList()})],
    )
    return MessageToDict(card)


def test_a_card_the_sdk_builds_passes_as_the_sdk_writes_it() -> None:
    card = sdk_card("extract", "summarize")
    assert parse_card(card) == card
    assert skill_ids(card) == ["extract", "summarize"]
    # snake_case keys (ParseDict takes them) come back as the SDK's camelCase.
    snake = copy.deepcopy(card)
    snake["default_input_modes"] = snake.pop("defaultInputModes")
    assert parse_card(snake) == card


def _with(change: Any) -> dict[str, Any]:
    card = sdk_card()
    change(card)
    return card


# (what is wrong, the card, the field named, words of the reason)
REFUSED_BY_THE_SDK = [
    ("unknown field", _with(lambda c: c.update(url="https://x")), "card.url", "not a field"),
    ("wrong type", _with(lambda c: c.update(name=5)), "card.name", "string"),
    (
        "tags not a list",
        _with(lambda c: c["skills"][0].update(tags="invoices")),
        "card.skills[0].tags",
        "list",
    ),
    (
        "unknown skill field",
        _with(lambda c: c["skills"][0].update(security=[])),
        "card.skills[0].security",
        "AgentSkill",
    ),
    (
        "boolean as a string",
        _with(lambda c: c["capabilities"].update(streaming="no")),
        "card.capabilities.streaming",
        "boolean",
    ),
    (
        "two scheme types",
        _with(
            lambda c: c["securitySchemes"]["bearer"].update(mtlsSecurityScheme={"description": "x"})
        ),
        "card.securitySchemes.bearer",
        "oneof",
    ),
    (
        "requirement not a StringList",
        _with(lambda c: c["securityRequirements"].append({"schemes": {"bearer": ["a"]}})),
        "card.securityRequirements[1].schemes.bearer",
        "object",
    ),
]


@pytest.mark.parametrize(("what", "card", "field", "reason"), REFUSED_BY_THE_SDK)
def test_a_card_the_sdk_types_refuse_is_refused_naming_the_field(
    what: str, card: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(ParseError):  # the SDK's own types refuse it
        ParseDict(card, AgentCard())
    with pytest.raises(CardError) as refused:
        parse_card(card)
    assert refused.value.field == field, what
    assert reason in refused.value.reason, refused.value.reason


BROKEN_RULES = [
    ("no description", _with(lambda c: c.pop("description")), "card.description"),
    ("blank name", _with(lambda c: c.update(name="  ")), "card.name"),
    ("no skills", _with(lambda c: c.update(skills=[])), "card.skills"),
    ("no interface", _with(lambda c: c.pop("supportedInterfaces")), "card.supportedInterfaces"),
    ("no capabilities", _with(lambda c: c.pop("capabilities")), "card.capabilities"),
    ("no input modes", _with(lambda c: c.pop("defaultInputModes")), "card.defaultInputModes"),
    ("skill without tags", _with(lambda c: c["skills"][0].pop("tags")), "card.skills[0].tags"),
    ("skill without name", _with(lambda c: c["skills"][0].pop("name")), "card.skills[0].name"),
    (
        "interface without binding",
        _with(lambda c: c["supportedInterfaces"][0].pop("protocolBinding")),
        "card.supportedInterfaces[0].protocolBinding",
    ),
    (
        "duplicate skill id",
        _with(lambda c: c["skills"].append(copy.deepcopy(c["skills"][0]))),
        "card.skills[1].id",
    ),
    (
        "skill id with a space",
        _with(lambda c: c["skills"][0].update(id="a b")),
        "card.skills[0].id",
    ),
    (
        "mode not a media type",
        _with(lambda c: c["skills"][0].update(inputModes=["json"])),
        "card.skills[0].inputModes[0]",
    ),
    (
        "requirement of an undeclared scheme",
        _with(lambda c: c["skills"][0]["securityRequirements"][0]["schemes"].update(oauth={})),
        "card.skills[0].securityRequirements[0].schemes.oauth",
    ),
    (
        "scheme of no type",
        _with(lambda c: c["securitySchemes"].update(empty={})),
        "card.securitySchemes.empty",
    ),
    (
        "relative interface URL",
        _with(lambda c: c["supportedInterfaces"][0].update(url="/a2a")),
        "card.supportedInterfaces[0].url",
    ),
    ("provider without url", _with(lambda c: c["provider"].pop("url")), "card.provider.url"),
    ("not an object", ["a card"], "card"),
    (
        "too large",
        _with(lambda c: c.update(description="x" * MAX_CARD_BYTES)),
        "card",
    ),
]


@pytest.mark.parametrize(("what", "card", "field"), BROKEN_RULES)
def test_a_card_breaking_a_rule_is_refused_naming_the_field(
    what: str, card: Any, field: str
) -> None:
    with pytest.raises(CardError) as refused:
        parse_card(card)
    assert refused.value.field == field, f"{what}: {refused.value}"


def test_the_served_card_names_blocks_and_drops_the_agents_signatures() -> None:
    card = sdk_card()
    card["signatures"] = [{"protected": "e30", "signature": "c2ln"}]
    card = parse_card(card)
    served = served_card(card, url="wss://blocks.example/v1/agents/connect", transport="relay")
    assert served["supportedInterfaces"] == [
        {
            "url": "wss://blocks.example/v1/agents/connect",
            "protocolBinding": "BLOCKS-RELAY",
            "protocolVersion": "1.0",
        }
    ]
    assert "signatures" not in served
    assert card["signatures"]  # the stored card is left as it was
    assert parse_card(served)["skills"] == card["skills"]
