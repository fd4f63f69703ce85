"""Superpixels of an image, shared by LIME (``lime_engine``) and image SHAP (``shap_media``).

Both explain an image by the same superpixels (the features they report are the same segments),
switched off the same way (set to ``hide_color``, by default the image's mean). The segment map
is computed once per image and options and kept in a small LRU, so the cost estimate, which
counts the superpixels, does not make the explanation segment the image twice.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from chalicelib.core.errors import ValidationError

SEGMENT_CACHE_SIZE = 4
_SEGMENTS: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
_SEGMENTS_LOCK = threading.Lock()
SEGMENTATIONS = ("slic", "quickshift", "felzenszwalb")


def image_options(
    segmentation: str, n_segments: int, hide_color: float | None
) -> tuple[str, int, float | None]:
    """Validated superpixel options, shared by LIME and image SHAP.

    Raises:
        ValidationError: An unknown segmentation, ``n_segments`` outside 2–500, or a
            non-finite ``hide_color``.
    """
    if segmentation not in SEGMENTATIONS:
        raise ValidationError(f"segmentation must be one of {', '.join(SEGMENTATIONS)}")
    if not 2 <= int(n_segments) <= 500:
        raise ValidationError("n_segments must be between 2 and 500")
    if hide_color is not None and not np.isfinite(float(hide_color)):
        raise ValidationError("hide_color must be a finite number")
    return segmentation, int(n_segments), None if hide_color is None else float(hide_color)


def image_segments(image: np.ndarray, segmentation: str, n_segments: int, seed: int) -> np.ndarray:
    """The superpixel map (H×W segment ids) of an H×W or H×W×3 image.

    Segmentation runs on the RGB view of the image (grayscale is repeated into three channels,
    as ``LimeImageExplainer`` does). LIME and image SHAP both use this map. The last few maps
    are kept (keyed by the image's bytes and the options), so the cost estimate, which counts
    the superpixels, does not make the explanation segment the image twice.
    """
    import hashlib

    digest = hashlib.sha256(np.ascontiguousarray(image, dtype=float).tobytes()).hexdigest()
    key = (digest, image.shape, segmentation, int(n_segments), int(seed))
    with _SEGMENTS_LOCK:
        found = _SEGMENTS.get(key)
        if found is not None:
            _SEGMENTS.move_to_end(key)
            return found
    from skimage.color import gray2rgb

    rgb = gray2rgb(image) if image.ndim == 2 else image
    segments = np.asarray(_segmenter(segmentation, n_segments, seed)(rgb))
    segments.setflags(write=False)
    with _SEGMENTS_LOCK:
        _SEGMENTS[key] = segments
        while len(_SEGMENTS) > SEGMENT_CACHE_SIZE:
            _SEGMENTS.popitem(last=False)
    return segments


def hidden_value(image: np.ndarray, hide_color: float | None) -> np.ndarray | float:
    """What a switched-off superpixel becomes, for LIME and image SHAP alike: ``hide_color``,
    or the image's mean (per channel for RGB)."""
    if hide_color is not None:
        return float(hide_color)
    if image.ndim == 3:
        return _mean(image.reshape(-1, image.shape[2]))
    return float(_mean(image.reshape(-1, 1))[0])


def _mean(pixels: np.ndarray) -> np.ndarray:
    """Each column's mean, without overflow: pixels near the largest double summed to inf
    (and the masked images then held inf), so such a column is averaged scaled down."""
    with np.errstate(over="ignore"):
        found = pixels.mean(axis=0)
    if np.isfinite(found).all():
        return found
    scale = np.abs(pixels).max(axis=0)
    return (pixels / np.where(scale > 0, scale, 1.0)).mean(axis=0) * scale


def _segmenter(segmentation: str, n_segments: int, seed: int) -> Any:
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    if segmentation == "slic":
        return SegmentationAlgorithm(
            "slic", n_segments=n_segments, compactness=10, start_label=0, convert2lab=False
        )
    if segmentation == "quickshift":
        return SegmentationAlgorithm(
            "quickshift", kernel_size=2, max_dist=50, ratio=0.5, random_seed=seed
        )
    return SegmentationAlgorithm("felzenszwalb", scale=50, sigma=0.5, min_size=2)
