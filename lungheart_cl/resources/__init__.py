"""Data files shipped with the package (see SOURCE.md for where each comes from)."""
