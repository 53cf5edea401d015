"""Per-pixel processing backends: ``numpy`` (always) and ``cuda`` (PyCUDA + kernels).

Both implement :class:`edge.backends.base.Backend` and produce the same
:class:`edge.backends.base.ChainResult` for the same inputs (the NumPy backend is the reference).
"""
