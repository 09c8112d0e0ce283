"""Dock watching, capture (copy + hash), probe, fingerprint and derive.

Not built yet: the capture daemon arrives with the capture issue. Importing
this package is safe; it exposes nothing.
"""
