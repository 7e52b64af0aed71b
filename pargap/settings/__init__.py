"""Fit settings: the typed schema, gap_fit's command line and GAP strings, TOML files, the reference page."""
