"""Audit rules: what an event says, how events chain, and how a chain or an export is verified.

What an event records (`records`), deterministic event ids (`ids`), the canonical encoding and
hash chain (`chain`, `event_hash`), signed checkpoint claims (`checkpoints`), the export's file
format (`export_format`), and verification that names the first broken link (`chain_verifier`,
`diagnosis`, `verify`). `blocks audit verify` runs this offline, with nothing else of Blocks.

May use: `blocks.core`'s top modules only.
"""
