"""Analyses over finished runs (method comparisons across seeds); top layer, beside cli/search/bench."""
