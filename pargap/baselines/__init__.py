"""Baseline ("core") potentials added to the GAP: QUIP's glue and pair tables, Stillinger-Weber."""
