# cython: boundscheck=False, wraparound=False, cdivision=True
"""Fused optimizer updates (filled by the training work)."""
