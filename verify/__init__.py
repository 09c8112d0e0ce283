"""Offline verification for courts and supervisors.

Depends only on the standard library, PyNaCl and the pure ledger core
(`ledger.tree`, `ledger.note`, `ledger.checkpoint`, `ledger.proof`,
`ledger.entry`, `ledger.audit`). `python -m verify proof` checks an entry
against its C2SP tlog-proof; `python -m verify ledger` recomputes a whole
tile folder. Bags (exports) come with the export work.
"""
