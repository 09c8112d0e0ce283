"""Retention rules, holds, schedules and sweeps.

Not built yet: the retention issue fills this package. Importing it is safe;
it exposes nothing.
"""
