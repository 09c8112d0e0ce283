"""Public disclosure (公示): figures from the ledger, the rules of what may be shown, and
the signed publication folder."""
