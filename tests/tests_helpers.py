"""Helpers shared by several test modules."""

import numpy as np


def same_partition(a, b):
    """Equal up to renumbering: same background, and a bijection between the labels."""
    a, b = np.asarray(a), np.asarray(b)
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]).astype(np.int64), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
