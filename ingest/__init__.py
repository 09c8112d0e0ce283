"""Capture from recorder docks: discovery, stability, one-pass copy, identity, probe.

`pipeline.Capturer` is the capture pipeline used by `custody run` (with
`watch.DockWatcher`) and `custody ingest`; `objects` holds the local
content-addressed store and the pipelined copy; `identity`, `media` and
`probe` describe what was captured. Depends on `ledger` only.
"""
