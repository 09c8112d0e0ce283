"""custody: evidence integrity and archive appliance for recorder docks.

This package is the composition root: configuration, the command line and
the wiring of the domain packages (`ingest`, `ledger`, `archive`,
`retention`, `verify`).
"""

__version__ = "0.1.0"
