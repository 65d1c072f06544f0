"""The pipeline's value types and their one proto conversion."""

import pytest

from semforge.analysis import MeasureOptions
from semforge.common.v1 import common_pb2
from semforge.errors import InvalidOption
from semforge.modality import Modality
from semforge.pipeline import AnalysisOptions, DataBar
from semforge.rpc.convert import analysis_options_from_pb, analysis_options_pb, databar_from_pb, databar_pb


def test_databar_rule():
    assert DataBar.parse("auto").specimen_rows(100, lambda: 80) == 80
    assert DataBar.parse("none").specimen_rows(100, lambda: 80) == 100
    assert DataBar.parse("60").specimen_rows(100, lambda: pytest.fail("detects only for auto")) == 60
    with pytest.raises(InvalidOption, match="1..100"):
        DataBar.parse("160").specimen_rows(100, lambda: 80)
    for bad in ("0", "-3", "bottom"):
        with pytest.raises(InvalidOption):
            DataBar.parse(bad)
    for bar, pb in ((DataBar.auto(), 0), (DataBar.none(), -1), (DataBar.fixed(700), 700)):
        assert databar_pb(bar) == pb and databar_from_pb(pb) == bar
    with pytest.raises(InvalidOption, match="specimen_rows"):
        databar_from_pb(-5)


def test_analysis_options_round_trip_through_the_proto():
    o = AnalysisOptions(MeasureOptions(separate="watershed", modality="tem", min_diameter_nm=2.0,
                                       convexity_threshold=0.9, classify=False),
                        pixel_size_nm=1.5, databar=DataBar.fixed(300), segmenter="classical")
    back = analysis_options_from_pb(analysis_options_pb(o))
    assert back == o
    assert analysis_options_from_pb(common_pb2.AnalysisOptions()) == AnalysisOptions(MeasureOptions(classify=False))


def test_modality_properties():
    assert [m.value for m in Modality if m.dark_particles] == ["stem", "tem"]
    assert Modality.parse("SE") is Modality.SE and Modality.SE == "se" and f"{Modality.TEM}" == "tem"
    assert "circle" in Modality.TEM.shape_classes and "sphere" in Modality.HIM.shape_classes
    with pytest.raises(InvalidOption, match="valid: se, stem, tem, him"):
        Modality.parse("xray")
