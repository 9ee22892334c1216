"""The payload codec: history holds ciphertext; rotation keeps old payloads readable; tampering fails."""

from __future__ import annotations

import uuid

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import ActivitySerializationContext, WorkflowSerializationContext

from blocks.infra.crypto.key_specs import PayloadKeyError, new_payload_key_spec, parse_payload_keys
from blocks.infra.crypto.org_keys import (
    OrgDataKey,
    OrgKeyUnavailable,
    install_org_keys,
    installed_org_keys,
)
from blocks.infra.crypto.run_keys import LLM_CALL_ACTIVITY, RunDataKey
from blocks.infra.temporal.payload_codec import (
    ENCODING,
    KEY_ID,
    ORG,
    SCOPE,
    EncryptionCodec,
    payload_org,
)


def _payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


async def test_round_trip_hides_the_plaintext() -> None:
    codec = EncryptionCodec(*parse_payload_keys(new_payload_key_spec("k1")))
    original = _payload("expense for the CFO's dinner")
    [sealed] = await codec.encode([original])
    assert sealed.metadata["encoding"] == ENCODING
    assert b"CFO" not in sealed.SerializeToString()
    assert await codec.decode([sealed]) == [original]


async def test_rotation_decrypts_with_old_keys_and_encrypts_with_the_first() -> None:
    old_spec, new_spec = new_payload_key_spec("k1"), new_payload_key_spec("k2")
    old = EncryptionCodec(*parse_payload_keys(old_spec))
    rotated = EncryptionCodec(*parse_payload_keys(f"{new_spec},{old_spec}"))
    [by_old] = await old.encode([_payload("a")])
    assert await rotated.decode([by_old]) == [_payload("a")]
    [by_new] = await rotated.encode([_payload("b")])
    assert by_new.metadata["encryption-key-id"] == b"k2"
    with pytest.raises(PayloadKeyError, match="unknown key id 'k2'"):
        await old.decode([by_new])


async def test_tampering_and_relabelling_are_refused() -> None:
    spec_a = new_payload_key_spec("a")
    codec = EncryptionCodec(*parse_payload_keys(f"{spec_a},{new_payload_key_spec('b')}"))
    [sealed] = await codec.encode([_payload("x")])
    flipped = Payload(
        metadata=dict(sealed.metadata), data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    )
    with pytest.raises(InvalidTag):
        await codec.decode([flipped])
    relabelled = Payload(metadata={**sealed.metadata, "encryption-key-id": b"b"}, data=sealed.data)
    with pytest.raises(InvalidTag):
        await codec.decode([relabelled])


async def test_unencrypted_payloads_pass_through() -> None:
    codec = EncryptionCodec(*parse_payload_keys(new_payload_key_spec()))
    assert await codec.decode([_payload("plain")]) == [_payload("plain")]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no payload key"),
        ("nokey", "key-id:base64-key"),
        ("k:!!!", "not valid base64"),
        ("k:AAAA", "32 bytes"),
    ],
)
def test_bad_key_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(PayloadKeyError, match=message):
        parse_payload_keys(spec)


# --- organization keys ---------------------------------------------------------------------


class _MemoryOrgKeys:
    """An in-memory key source: runs named by id, one live key per organization."""

    def __init__(self, runs: dict[str, uuid.UUID]) -> None:
        self.runs = runs
        self.keys: dict[tuple[uuid.UUID, uuid.UUID], OrgDataKey] = {}
        self.live: dict[uuid.UUID, OrgDataKey] = {}
        self.run_keys: dict[str, RunDataKey] = {}

    async def run_org(self, workflow_id: str) -> uuid.UUID | None:
        return self.runs.get(workflow_id)

    async def active_key(self, org_id: uuid.UUID) -> OrgDataKey:
        if org_id not in self.live:
            key = OrgDataKey(uuid.uuid4(), org_id, AESGCM.generate_key(bit_length=256))
            self.live[org_id] = self.keys[(org_id, key.key_id)] = key
        return self.live[org_id]

    async def key(self, org_id: uuid.UUID, key_id: uuid.UUID) -> OrgDataKey:
        try:
            return self.keys[(org_id, key_id)]
        except KeyError:
            raise OrgKeyUnavailable(f"organization {org_id} has no data key {key_id}") from None

    async def run_key(self, org_id: uuid.UUID, workflow_id: str) -> RunDataKey:
        if workflow_id not in self.run_keys:
            secret = AESGCM.generate_key(bit_length=256)
            self.run_keys[workflow_id] = RunDataKey(uuid.uuid4(), org_id, workflow_id, secret)
        return self.run_keys[workflow_id]

    async def run_key_by_id(self, org_id: uuid.UUID, key_id: uuid.UUID) -> RunDataKey:
        for key in self.run_keys.values():
            if key.key_id == key_id and key.org_id == org_id:
                return key
        raise OrgKeyUnavailable(f"run history key {key_id} was destroyed")


ORG_A, ORG_B = uuid.uuid4(), uuid.uuid4()


def _org_codec() -> tuple[EncryptionCodec, _MemoryOrgKeys]:
    source = _MemoryOrgKeys({"run-a": ORG_A, "run-b": ORG_B})
    return EncryptionCodec(*parse_payload_keys(new_payload_key_spec("p")), org_keys=source), source


def _context(workflow_id: str) -> WorkflowSerializationContext:
    return WorkflowSerializationContext(namespace="default", workflow_id=workflow_id)


async def test_a_runs_payloads_are_sealed_under_its_organizations_key() -> None:
    codec, source = _org_codec()
    [sealed] = await codec.with_context(_context("run-a")).encode([_payload("board minutes")])
    assert b"board minutes" not in sealed.SerializeToString()
    assert payload_org(sealed) == ORG_A
    assert sealed.metadata[KEY_ID] == str(source.live[ORG_A].key_id).encode()
    # Any instance of the codec opens it: the metadata says whose key, not the context.
    assert await codec.decode([sealed]) == [_payload("board minutes")]


async def test_payloads_of_no_organization_use_the_payload_keys() -> None:
    codec, _ = _org_codec()
    for bound in (codec, codec.with_context(_context("checkpoint-x"))):
        [sealed] = await bound.encode([_payload("x")])
        assert payload_org(sealed) is None
        assert sealed.metadata[KEY_ID] == b"p"


async def test_for_org_seals_under_that_organization_whatever_the_workflow() -> None:
    codec, _ = _org_codec()
    [sealed] = await codec.with_context(_context("run-a")).for_org(ORG_B).encode([_payload("y")])
    assert payload_org(sealed) == ORG_B


async def test_a_payload_relabelled_to_another_organization_or_key_is_refused() -> None:
    codec, source = _org_codec()
    [sealed] = await codec.with_context(_context("run-a")).encode([_payload("z")])
    key_b = await source.active_key(ORG_B)
    # Another organization's key under the same label: the associated data names org and key.
    source.keys[(ORG_B, source.live[ORG_A].key_id)] = key_b
    moved = Payload(metadata={**sealed.metadata, ORG: str(ORG_B).encode()}, data=sealed.data)
    with pytest.raises(InvalidTag):
        await codec.decode([moved])
    # One bit of the tag flipped (overwriting the byte could leave it as it was: 1 in 256).
    flipped_tag = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    flipped = Payload(metadata=dict(sealed.metadata), data=flipped_tag)
    with pytest.raises(InvalidTag):
        await codec.decode([flipped])


async def test_a_destroyed_key_leaves_its_payloads_unreadable() -> None:
    codec, source = _org_codec()
    [sealed] = await codec.with_context(_context("run-b")).encode([_payload("w")])
    source.keys.clear()
    with pytest.raises(OrgKeyUnavailable):
        await codec.decode([sealed])


async def test_without_a_key_source_an_organizations_payload_is_refused_clearly() -> None:
    codec, _ = _org_codec()
    [sealed] = await codec.with_context(_context("run-a")).encode([_payload("v")])
    plain = EncryptionCodec(*parse_payload_keys(new_payload_key_spec("p")))
    installed = installed_org_keys()  # the session's database source, if a fixture set one
    install_org_keys(None)
    try:
        with pytest.raises(PayloadKeyError, match="organization's data key"):
            await plain.decode([sealed])
    finally:
        install_org_keys(installed)


# --- run history keys (the LLM step's payloads) --------------------------------------------------


def _activity(workflow_id: str, activity_type: str) -> ActivitySerializationContext:
    return ActivitySerializationContext(
        namespace="default",
        activity_id="1",
        activity_type=activity_type,
        activity_task_queue="q",
        workflow_id=workflow_id,
        workflow_type="w",
        is_local=False,
    )


async def test_the_llm_calls_payloads_are_sealed_under_the_runs_own_key() -> None:
    codec, source = _org_codec()
    llm = codec.with_context(_activity("run-a", LLM_CALL_ACTIVITY))
    [prompt] = await llm.encode([_payload("the prompt")])
    assert prompt.metadata[SCOPE] == b"run"
    assert payload_org(prompt) == ORG_A
    assert prompt.metadata[KEY_ID] == str(source.run_keys["run-a"].key_id).encode()
    assert await codec.decode([prompt]) == [_payload("the prompt")]
    # Any other activity of the run stays under the organization's key.
    [other] = await codec.with_context(_activity("run-a", "blocks.audit.append")).encode(
        [_payload("x")]
    )
    assert SCOPE not in other.metadata
    assert other.metadata[KEY_ID] == str(source.live[ORG_A].key_id).encode()


async def test_a_destroyed_run_key_leaves_only_the_prompts_unreadable() -> None:
    codec, source = _org_codec()
    [prompt] = await codec.with_context(_activity("run-a", LLM_CALL_ACTIVITY)).encode(
        [_payload("p")]
    )
    [run_input] = await codec.with_context(_context("run-a")).encode([_payload("i")])
    source.run_keys.clear()
    with pytest.raises(OrgKeyUnavailable, match="destroyed"):
        await codec.decode([prompt])
    assert await codec.decode([run_input]) == [_payload("i")]


async def test_a_run_scoped_payload_relabelled_as_the_organizations_is_refused() -> None:
    codec, source = _org_codec()
    [prompt] = await codec.with_context(_activity("run-a", LLM_CALL_ACTIVITY)).encode(
        [_payload("p")]
    )
    # Stripped of its scope it names the run key's id as an organization key: no such key.
    stripped = Payload(
        metadata={k: v for k, v in prompt.metadata.items() if k != SCOPE}, data=prompt.data
    )
    with pytest.raises(OrgKeyUnavailable):
        await codec.decode([stripped])
    run_key = source.run_keys["run-a"]
    source.keys[(ORG_A, run_key.key_id)] = OrgDataKey(run_key.key_id, ORG_A, run_key.secret)
    with pytest.raises(InvalidTag):  # the associated data says which kind of key sealed it
        await codec.decode([stripped])
