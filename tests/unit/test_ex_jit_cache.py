"""shap's numba compilations cached on disk (``chalicelib.explainability.jit_cache``): the
cacheable copy of shap's output builder computes what shap's does, and a second fresh process
with the cache (here seeded from another directory, as the explainer image does from the cache
baked at build time) compiles nothing. Counted with numba's event API, never timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _batch(rng: np.random.Generator, samples: int, steps: int, full: bool) -> tuple:
    outputs_per_step = samples if full else 2
    sizes = rng.integers(0, outputs_per_step + 1, size=steps)
    sizes[0] = outputs_per_step
    positions = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    outputs = rng.normal(size=int(positions[-1]))
    varying = np.zeros((steps, samples), dtype=bool)
    counts = np.zeros(steps, dtype=np.int64)
    for step, size in enumerate(sizes):
        rows = rng.choice(samples, size=int(size), replace=False) if not full else np.arange(size)
        varying[step, rows] = True
        counts[step] = size
    return outputs, positions, varying, counts


@pytest.mark.parametrize("full", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_cached_output_builder_computes_what_shaps_does(full: bool, weighted: bool) -> None:
    from shap import links
    from shap.utils import _masked_model

    from chalicelib.explainability.jit_kernels import fixed_single_output_identity

    original = getattr(
        _masked_model._build_fixed_single_output,
        "original",
        _masked_model._build_fixed_single_output,
    )
    rng = np.random.default_rng(7 + full + 2 * weighted)
    for samples, steps in ((1, 5), (4, 30), (9, 200)):
        outputs, positions, varying, counts = _batch(rng, samples, steps, full or samples == 1)
        weights = rng.random(samples) if weighted else None
        theirs = (np.zeros(steps), rng.normal(size=samples))
        ours = (theirs[0].copy(), theirs[1].copy())
        original(*theirs, outputs, positions, varying, counts, links.identity, weights)
        fixed_single_output_identity(*ours, outputs, positions, varying, counts, weights)

        np.testing.assert_array_equal(ours[0], theirs[0])
        np.testing.assert_array_equal(ours[1], theirs[1])
        assert np.isfinite(theirs[0]).all() and theirs[0].any()


def test_other_links_keep_shaps_own_function() -> None:
    from shap import links

    from chalicelib.explainability.jit_kernels import single_output

    calls = []
    built = single_output(lambda *args: calls.append(args[6]), links.identity)
    built(None, None, None, None, None, None, links.logit, None)

    assert calls == [links.logit]
    assert built.original is not None


def _clustering(rng: np.random.Generator, leaves: int) -> np.ndarray:
    """A random binary merge tree over ``leaves`` leaves in scipy's linkage layout (left, right,
    distance, size), as shap's maskers build them."""
    sizes = {i: 1 for i in range(leaves)}
    free = list(range(leaves))
    rows = []
    for node in range(leaves, 2 * leaves - 1):
        left, right = (free.pop(int(rng.integers(len(free)))) for _ in range(2))
        sizes[node] = sizes[left] + sizes[right]
        rows.append([left, right, float(node), sizes[node]])
        free.append(node)
    return np.asarray(rows, dtype=float)


def _shaps_lower_credit() -> object:
    from shap.explainers import _partition

    return getattr(_partition.lower_credit, "original", _partition.lower_credit)


def test_the_cached_lower_credit_hands_down_what_shaps_recursive_one_does() -> None:
    from chalicelib.explainability.jit_kernels import cached_lower_credit

    original = _shaps_lower_credit()
    ours = cached_lower_credit(original)
    rng = np.random.default_rng(11)
    for leaves in (1, 2, 3, 8, 40, 300):
        clustering = _clustering(rng, leaves) if leaves > 1 else np.zeros((0, 4))
        theirs = rng.normal(size=2 * leaves - 1)
        mine = theirs.copy()
        original(len(theirs) - 1, 0, leaves, theirs, clustering)  # type: ignore[operator]
        ours(len(mine) - 1, 0, leaves, mine, clustering)

        np.testing.assert_array_equal(mine, theirs)
    assert ours.original is original


def test_the_cached_lower_credit_hands_down_several_outputs_as_shaps_does() -> None:
    """shap's Partition explainer of a model with several outputs hands down a row of values
    per node; the stack copy holds one number per node and failed to compile on it (numba
    TypingError, in every process with ``NUMBA_CACHE_DIR`` set: the patch is global)."""
    from chalicelib.explainability.jit_kernels import cached_lower_credit

    original = _shaps_lower_credit()
    ours = cached_lower_credit(original)
    rng = np.random.default_rng(12)
    clustering = _clustering(rng, 9)
    theirs = rng.normal(size=(17, 3))
    mine = theirs.copy()
    original(16, 0, 9, theirs, clustering)  # type: ignore[operator]
    ours(16, 0, 9, mine, clustering)
    np.testing.assert_array_equal(mine, theirs)


def test_text_and_image_shap_with_the_cached_lower_credit_equal_shaps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shap.explainers import _partition
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from chalicelib.explainability.jit_cache import _Models, import_shap
    from chalicelib.explainability.jit_kernels import cached_lower_credit
    from chalicelib.explainability.shap_engine import SHAPExplainer

    import_shap()
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(40)]
    corpus = [" ".join(rng.choice(words, 10)) for _ in range(50)]
    models = _Models()
    text = make_pipeline(TfidfVectorizer(), LogisticRegression())
    models.add(
        "text", text.fit(corpus, [int("w3 " in t) for t in corpus]), "text_classification", 0, None
    )
    images = rng.random((6, 16, 16))
    image = LogisticRegression(max_iter=50).fit(images.reshape(6, -1), [0, 1] * 3)
    models.add("image", image, "image_classification", 0, None)

    def explain() -> list[list[float]]:
        explainer = SHAPExplainer(models)
        found = [explainer.explain_text_prediction("text", 1, " ".join(words[:20]), max_evals=80)]
        found.append(
            explainer.explain_image_prediction("image", 1, images[0].tolist(), max_evals=80)
        )
        return [[c.contribution for c in answer.feature_contributions] for answer in found]

    original = _shaps_lower_credit()
    monkeypatch.setattr(_partition, "lower_credit", original)
    theirs = explain()
    monkeypatch.setattr(_partition, "lower_credit", cached_lower_credit(original))
    mine = explain()

    assert mine == theirs and all(any(values) for values in theirs)


def test_without_numba_cache_dir_shap_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.explainability import jit_cache

    if jit_cache.cache_directory():
        pytest.skip("this process runs with NUMBA_CACHE_DIR")
    shap = jit_cache.import_shap()

    assert not hasattr(shap.utils._masked_model._build_fixed_single_output, "original")
    assert not hasattr(shap.explainers._partition.lower_credit, "original")


def _warm(cache: Path, seed: Path | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "SYNAPSE_NUMBA"))}
    env.update(NUMBA_CACHE_DIR=str(cache), NUMBA_CPU_NAME="generic", POWERTOOLS_LOG_LEVEL="ERROR")
    if seed is not None:
        env["SYNAPSE_NUMBA_CACHE_SEED"] = str(seed)
    done = subprocess.run(
        [sys.executable, "-m", "chalicelib.explainability.jit_cache"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_process_seeded_with_the_built_cache_does_not_recompile(tmp_path: Path) -> None:
    built = _warm(tmp_path / "image", None)  # what the image build does
    seeded = _warm(tmp_path / "tmp", tmp_path / "image")  # a cold start: /tmp seeded

    assert "_rec_fill_masks" in built["compiled"]  # text and image SHAP reach numba
    assert built["compilations"] > 10
    assert "lower_credit_rows" in built["compiled"]  # shap's recursive one is not used
    assert seeded["compiled"] == [], seeded
    assert seeded["compilations"] == 0


def test_the_first_shap_import_of_a_process_prepares_the_numba_cache_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As a process's first :func:`import_shap` does (its preparation runs once per process,
    and the first call in a worker may be a test ``make test`` runs untraced): without a
    cache directory nothing is seeded nor routed, and a second call prepares nothing."""
    from chalicelib.explainability import jit_cache

    seeded: list[tuple[str, str]] = []
    monkeypatch.setattr(jit_cache, "_prepared", [])
    monkeypatch.setattr(jit_cache, "cache_directory", lambda: "")
    monkeypatch.setattr(jit_cache, "_seed", lambda *args: seeded.append(args))
    shap = jit_cache.import_shap()
    assert jit_cache._prepared == [""] and not seeded
    assert jit_cache.import_shap() is shap
    assert jit_cache._prepared == [""]
