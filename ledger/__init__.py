"""The signed, append-only Merkle ledger of a custody station.

Pure core (bytes in, values out; no file, network or process I/O):
`tree` (RFC 6962/9162 hashing and proofs), `tiles` (C2SP tlog-tiles),
`note` (C2SP signed-note, Ed25519), `checkpoint` (C2SP tlog-checkpoint),
`proof` (C2SP tlog-proof), `entry` (RFC 8785 signed entries),
`integrate` (new leaves to tiles) and `audit` (whole-log verification).

Imperative shell: `durable` (atomic, fsynced writes), `storage` (the tile
folder) and `log` (the station's ledger with SQLite-backed durable appends).

This package imports nothing from the rest of custody.
"""
