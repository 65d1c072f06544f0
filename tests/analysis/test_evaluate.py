import numpy as np
import pytest

from semforge.analysis import instance_iou, match_instances


def test_known_matches():
    true = np.zeros((20, 20), int)
    true[0:10, 0:10] = 1
    true[12:20, 12:20] = 2
    pred = np.zeros_like(true)
    pred[0:10, 0:8] = 5  # IoU 0.8 with 1
    pred[15:20, 15:20] = 7  # IoU 25/64 with 2: no match
    iou = instance_iou(pred, true)
    assert iou[0, 4] == pytest.approx(0.8)
    m = match_instances(pred, true)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 1)
    assert m["f1"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        match_instances(pred, true[:5])
