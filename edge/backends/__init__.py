"""Per-pixel processing backends: ``numpy`` (always, the reference), ``native`` (the fused chain
compiled for the CPU) and ``cuda`` (PyCUDA + kernels).

Each implements :class:`edge.backends.base.Backend`, runs one
:class:`edge.processing.plan.ChainPlan` and produces the same
:class:`edge.core.chain.ChainResult` for the same inputs (the NumPy backend is the reference).
"""
