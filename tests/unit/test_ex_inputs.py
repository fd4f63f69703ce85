"""Input and parameter validation of the explainers (no AWS, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from chalicelib.core.errors import UnprocessableEntity, ValidationError
from chalicelib.explainability.inputs import (
    canonical_input,
    image_input,
    tabular_matrix,
    tabular_row,
    text_input,
)
from chalicelib.explainability.lime_engine import lime_options
from chalicelib.explainability.shap_engine import choose_algorithm, shap_options


def test_tabular_rows_keep_feature_order_and_accept_ints() -> None:
    assert tabular_row({"b": 2, "a": 1.5}, ("a", "b")) == [1.5, 2.0]
    assert tabular_matrix([{"a": 1}, {"a": 2}], ("a",)).tolist() == [[1.0], [2.0]]
    with pytest.raises(ValidationError, match="must be an object"):
        tabular_row([1, 2], ("a", "b"))
    with pytest.raises(ValidationError, match="must not be empty"):
        tabular_matrix([], ("a",))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "input_data.image"),
        ({"image": [[1, 2], [3]]}, "rectangular"),
        ({"image": [1, 2, 3]}, "H×W"),
        ({"image": np.zeros((4, 4, 2)).tolist()}, "H×W"),
        ({"image": [[1, float("nan")], [1, 1]]}, "NaN"),
        ({"image": np.zeros((600, 600)).tolist()}, "pixels"),
    ],
)
def test_bad_images_are_400(data: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        image_input(data)


def test_texts_and_canonical_forms() -> None:
    assert text_input({"text": " hi "}) == " hi "
    with pytest.raises(ValidationError, match="longer than"):
        text_input({"text": "x" * 20_001})
    assert canonical_input("text", {"text": "a"}, ()) == {"text": "a"}
    assert canonical_input("image", {"image": [[0, 1], [1, 0]]}, ()) == {
        "image": [[0.0, 1.0], [1.0, 0.0]]
    }
    assert canonical_input("tabular", {"a": 1}, ("a",)) == [1.0]


def test_option_ranges_are_checked() -> None:
    with pytest.raises(ValidationError, match="background_sample_size"):
        shap_options(background_sample_size=0)
    with pytest.raises(ValidationError, match="background_method"):
        shap_options(background_method="median")
    with pytest.raises(ValidationError, match="algorithm"):
        shap_options(algorithm="deep")
    with pytest.raises(ValidationError, match="num_features"):
        lime_options(num_features=0)
    with pytest.raises(ValidationError, match="segmentation"):
        lime_options(segmentation="watershed")
    with pytest.raises(ValidationError, match="n_segments"):
        lime_options(n_segments=1)


def test_algorithm_choice_follows_the_model_family() -> None:
    class RandomForestClassifier:  # the choice is by class name: no training needed
        pass

    class LinearRegression:
        pass

    class SVC:
        pass

    assert choose_algorithm(RandomForestClassifier(), 30) == "tree"
    assert choose_algorithm(LinearRegression(), 30) == "linear"
    assert choose_algorithm(SVC(), 10) == "exact"
    assert choose_algorithm(SVC(), 11) == "kernel"
    assert choose_algorithm(RandomForestClassifier(), 3, "kernel") == "kernel"
    with pytest.raises(UnprocessableEntity, match="tree algorithm"):
        choose_algorithm(SVC(), 3, "tree")
    with pytest.raises(UnprocessableEntity, match="linear algorithm"):
        choose_algorithm(SVC(), 3, "linear")
    with pytest.raises(ValidationError):
        choose_algorithm(SVC(), 3, "deep")


def test_importing_the_api_loads_no_numerical_library() -> None:
    import subprocess
    import sys

    heavy = ("numpy", "shap", "lime", "sklearn", "numba", "pandas", "skimage")
    code = (
        "import sys, chalicelib.explainability.api; "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip() == "[]"


def _row_by_row(inputs: list, names: tuple[str, ...]) -> np.ndarray:
    """The oracle: every row through :func:`tabular_row` (the per-row check)."""
    rows = [tabular_row(item, names, f"inputs[{i}]: ") for i, item in enumerate(inputs)]
    return np.asarray(rows, dtype=float)


def test_a_batch_of_plain_floats_is_read_at_once_exactly_as_row_by_row() -> None:
    """The batch path checks every row at once (one itemgetter, one type set); the matrix is the
    one the per-row check builds, keys in any order, extreme doubles and -0.0 included."""
    names = ("a", "b", "c")
    rng = np.random.default_rng(5)
    values = rng.normal(size=(200, 3)) * 10.0 ** rng.integers(-300, 300, size=(200, 3))
    values[0] = [-0.0, 5e-324, 1.7976931348623157e308]
    inputs = [dict(zip(names[::-1], row[::-1], strict=True)) for row in values.tolist()]
    found = tabular_matrix(inputs, names)
    expected = _row_by_row(inputs, names)
    assert found.dtype == np.float64
    assert found.tobytes() == expected.tobytes()  # bit for bit, the sign of -0.0 included
    mixed = [{"a": 1, "b": 2.5, "c": 10**20}, {"a": -3.0, "b": 0, "c": 2**53 + 1}]
    assert tabular_matrix(mixed, names).tobytes() == _row_by_row(mixed, names).tobytes()
    single = [{"a": 0.5}, {"a": -1.25}]
    assert tabular_matrix(single, ("a",)).tolist() == [[0.5], [-1.25]]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"a": True}, "inputs[3]: feature 'a' must be a number; got bool"),
        ({"a": None}, "inputs[3]: feature 'a' must be a number; got null"),
        ({"a": float("nan")}, "inputs[3]: feature 'a' must be a finite number"),
        ({"b": float("inf")}, "inputs[3]: feature 'b' must be a finite number"),
        ({"a": "7"}, "inputs[3]: feature 'a' must be a number; got str"),
        ({"a": 10**400}, "inputs[3]: feature 'a' is too large"),
        ({"z": 1.0}, "inputs[3]: unknown feature 'z'"),
    ],
)
def test_one_bad_value_in_a_batch_is_named_by_row_and_feature(bad: dict, message: str) -> None:
    inputs = [{"a": float(i), "b": -float(i)} for i in range(6)]
    inputs[3] = {**inputs[3], **bad}
    if "z" in bad:
        del inputs[3]["b"]  # as many keys as features, one of them unknown
    with pytest.raises(ValidationError) as caught:
        tabular_matrix(inputs, ("a", "b"))
    assert str(caught.value.message).startswith(message)
    with pytest.raises(ValidationError, match=r"inputs\[2\]: input_data must be an object"):
        tabular_matrix([{"a": 1.0, "b": 1.0}] * 2 + [[1.0, 2.0]], ("a", "b"))
    with pytest.raises(ValidationError, match=r"inputs\[1\]: missing feature 'b'"):
        tabular_matrix([{"a": 1.0, "b": 1.0}, {"a": 1.0}], ("a", "b"))


def test_default_shap_options_given_in_other_types_equal_the_validated_ones() -> None:
    """The usual request's options are shared, not rebuilt: equal arguments of other numeric
    types give the same options, and any other value is still validated and normalized."""
    shared = shap_options()
    assert shared is shap_options(100, "kmeans", "auto", None, 0, False)
    assert shap_options(100.0, "kmeans", "auto", None, np.int64(0), False) == shared
    assert type(shap_options(100.0).background_sample_size) is int
    assert shap_options(include_interactions=1).include_interactions is True
    assert shap_options(seed=np.int64(7)).seed == 7 and type(shap_options(seed=7.0).seed) is int
    assert shared.as_parameters() == {
        "background_sample_size": 100,
        "background_method": "kmeans",
        "algorithm": "auto",
        "class_name": None,
        "include_interactions": False,
        "seed": 0,
        "nsamples": None,
    }
