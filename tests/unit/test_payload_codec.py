"""The payload codec: history holds ciphertext; rotation keeps old payloads readable; tampering fails."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from temporalio.api.common.v1 import Payload

from blocks.infra.crypto.key_specs import PayloadKeyError, new_payload_key_spec, parse_payload_keys
from blocks.infra.temporal.payload_codec import ENCODING, EncryptionCodec


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
