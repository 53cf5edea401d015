"""The fused chain's occupancy as the README states it (issue 20, item 9): shared memory per
tile limits it, from tile_launch's own block choice."""

from __future__ import annotations

import pytest

from edge.backends.cuda_ops import tile_launch, tile_occupancy

H100 = dict(shared_per_sm=228 * 1024, max_threads_per_sm=2048)
ORIN = dict(shared_per_sm=164 * 1024, max_threads_per_sm=1536)


@pytest.mark.parametrize("bands,block,h100,orin", [
    (25, 256, 1.0, 1.0),          # snapshot25: full occupancy
    (100, 96, 0.234, 0.25),       # TIVITA: 408 B per pixel, 96 threads per block
    (200, 32, 0.125, 0.125),
    (256, 32, 0.094, 0.083),
])
def test_fused_chain_occupancy(bands, block, h100, orin):
    assert tile_launch(1, bands).block == (block, 1, 1)
    assert tile_occupancy(bands, **H100) == pytest.approx(h100, abs=5e-4)
    assert tile_occupancy(bands, **ORIN) == pytest.approx(orin, abs=5e-4)
