"""GSLM: General / Specific Learning Modules with Seed Reactivation."""
