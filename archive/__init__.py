"""Object stores (local folder, S3), replication, tiering and export.

Not built yet: the cold-store issue fills this package. Importing it is safe;
it exposes nothing.
"""
