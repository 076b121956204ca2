"""UnknownNameError: a registry's unknown name with its close matches, for the models, quantizers and schemes."""

import pytest

import zoo
from zoo import UnknownNameError


@pytest.mark.parametrize(
    ("lookup", "short"),
    [
        (lambda: zoo.create_model("xnor_resnet19"),
         "unknown model 'xnor_resnet19'; did you mean xnor_resnet18, xnor_resnet34 or xnor_nobeta_resnet18?"),
        (lambda: zoo.get_scheme("xnr"), "unknown binarization scheme 'xnr'; did you mean xnor?"),
        (lambda: zoo.get_quantizer("ste_sgn"), "unknown quantizer 'ste_sgn'; did you mean ste_sign or scaled_sign?"),
    ],
)
def test_registries_name_close_matches(lookup, short):
    with pytest.raises(KeyError) as info:
        lookup()
    error = info.value
    assert isinstance(error, UnknownNameError) and error.short() == short
    assert str(error).startswith(short.replace("; did you mean ", " (did you mean ").replace("?", "?);"))
    assert f"; known {error.plural}: {', '.join(error.known)}" in str(error)


def test_without_close_matches_every_name_is_listed():
    error = UnknownNameError("model", "zzz", ["b", "a"])
    assert error.matches == [] and error.known == ["a", "b"]
    assert str(error) == error.short() == "unknown model 'zzz'; known models: a, b"
