"""Compiled CPU kernels of mininet (private). Use mininet.backend, not this package."""
