# cython: boundscheck=False, wraparound=False, cdivision=True
"""im2col / col2im and pooling kernels (filled by the convolution work)."""
