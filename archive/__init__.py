"""Object stores (local folder, S3) and replication to them.

- `archive.store`: the port (`ObjectStore`, `LockControl`), key layout, values.
- `archive.settings`: S3 and replication settings (plain values, no boto3).
- `archive.local`: the local-folder store (embedded default).
- `archive.s3`: S3-compatible stores through boto3.
- `archive.replicate`: the durable upload queue and the ledger mirror.
- `archive.retrieve`: get an object by hash, verified while it streams.
- `archive.tiles`: read a ledger mirrored into a store (for verification).
"""
