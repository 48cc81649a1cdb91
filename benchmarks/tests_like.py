"""The 4 x 4 label mosaic of the dedup benchmark (as the tests build theirs)."""

import numpy as np

from tilefuse.synthetic import cut_tiles, make_volume


def label_tiles(shape=(64, 960, 960), grid=(4, 4), seed=0):
    _, truth = make_volume(shape, seed=seed, blob_radius=5)
    m = cut_tiles(truth, grid, overlap=0.15)
    rng = np.random.default_rng(seed)
    tiles = []
    for t in m.tiles:
        ids = np.unique(t[t > 0])
        lut = np.zeros(int(t.max()) + 1, dtype=np.uint32)
        lut[ids] = rng.permutation(len(ids)).astype(np.uint32) + 1
        tiles.append(lut[t])
    return truth, tiles, m.offsets_px
