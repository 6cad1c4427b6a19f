"""Hardest examples."""
