"""The installed packages import and expose their version."""

import pipeline


def test_pipeline_has_version():
    assert pipeline.__version__.count(".") == 2
