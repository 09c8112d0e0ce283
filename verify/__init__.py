"""Offline verification for courts and supervisors.

Depends only on the standard library, PyNaCl and the pure ledger core
(`ledger.tree`, `ledger.note`, `ledger.checkpoint`, `ledger.proof`,
`ledger.entry`, `ledger.audit`). The stand-alone bag and file verifier is
built in the export issue; today `custody ledger verify` uses
`ledger.audit` through `verify.folder`.
"""
