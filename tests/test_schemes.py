import json

import pytest

from zoo.schemes import BinarizeConfig, get_scheme, list_schemes


def test_registered_schemes():
    assert {"fp", "bwn", "xnor", "xnor_nobeta", "w1a2", "w1a4"} <= set(list_schemes())
    assert get_scheme("fp").is_float
    xnor = get_scheme("xnor")
    assert (xnor.kernel_quantizer, xnor.input_quantizer, xnor.input_scale) == ("scaled_sign", "bin_activ", True)
    assert get_scheme("xnor_nobeta").input_scale is False
    assert get_scheme("bwn").input_quantizer is None and get_scheme("bwn").kernel_quantizer == "scaled_sign"
    assert get_scheme("w1a2").input_bits == 2


def test_unknown_scheme_lists_known():
    with pytest.raises(KeyError, match="known schemes: .*xnor"):
        get_scheme("xnorr")


def test_overrides_and_json_round_trip():
    config = get_scheme("xnor", binary_gradient=True)
    assert config.binary_gradient and not get_scheme("xnor").binary_gradient
    assert BinarizeConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown BinarizeConfig field"):
        BinarizeConfig.from_dict({**config.to_dict(), "bogus": 1})
