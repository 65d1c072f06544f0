"""#16: two-scale instance fusion (the x1.5 cuts inside the x1 outlines), known answers."""

from __future__ import annotations

import numpy as np
import pytest

from semforge.training.segmentation.scalefuse import fuse_instances


def _two_grains():
    coarse = np.zeros((30, 50), np.int32)
    coarse[5:25, 5:45] = 1  # two 20x20 grains merged into one instance
    coarse[27:30, 0:5] = 2  # an unrelated small particle
    fine = np.zeros_like(coarse)
    fine[6:24, 6:24] = 3  # the finer scale separates them (slightly smaller outlines)
    fine[6:24, 26:44] = 7
    return coarse, fine


def test_small_pieces_split_the_coarse_instance_on_its_own_outline():
    coarse, fine = _two_grains()
    out = fuse_instances(coarse, fine, max_piece_px=500)
    assert np.array_equal(out > 0, coarse > 0)  # foreground unchanged
    left, right = out[15, 10], out[15, 40]
    assert left != right and {left, right} >= {1} and len(np.unique(out[coarse == 1])) == 2
    # every coarse pixel goes to the nearest piece: the cut lies midway between the pieces (columns 24-25)
    assert (out[5:25, 5:25] == left).all() and (out[5:25, 25:45] == right).all()
    assert (out[coarse == 2] == 2).all()


def test_large_pieces_leave_the_instance_whole():
    coarse, fine = _two_grains()
    out = fuse_instances(coarse, fine, max_piece_px=300)  # each piece is 324 px
    assert np.array_equal(out, coarse)


def test_one_piece_or_pieces_mostly_outside_change_nothing():
    coarse, fine = _two_grains()
    only = np.where(fine == 3, 3, 0)
    assert np.array_equal(fuse_instances(coarse, only, max_piece_px=500), coarse)
    outside = np.zeros_like(fine)
    outside[0:8, 6:24] = 4  # 3 of 8 rows inside: not a piece of instance 1
    outside[6:24, 26:44] = 5
    assert np.array_equal(fuse_instances(coarse, outside, max_piece_px=500), coarse)
    with pytest.raises(ValueError, match="shapes"):
        fuse_instances(coarse, fine[:, :10], max_piece_px=1)
