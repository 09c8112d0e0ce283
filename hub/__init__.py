"""The county hub: follows every station's log from the shared bucket, witnesses it,
raises alarms, audits stored footage and keeps the county catalog (Apache Iceberg)."""
