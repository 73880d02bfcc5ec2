"""The lab's keypoints and the skeleton drawn between them."""
from __future__ import annotations

#: Keypoints the pipeline works with (model outputs are mapped onto these names by the config).
KEYPOINTS: tuple[str, ...] = (
    "nose",
    "left_ear",
    "right_ear",
    "tail_base",
    "front_left_paw",
    "front_right_paw",
    "hind_left_paw",
    "hind_right_paw",
)

PAWS: tuple[str, ...] = ("front_left_paw", "front_right_paw", "hind_left_paw", "hind_right_paw")

#: Segments drawn by the viewer; pairs of keypoint names.
SKELETON: tuple[tuple[str, str], ...] = (
    ("nose", "left_ear"),
    ("nose", "right_ear"),
    ("left_ear", "right_ear"),
    ("left_ear", "tail_base"),
    ("right_ear", "tail_base"),
    ("left_ear", "front_left_paw"),
    ("right_ear", "front_right_paw"),
    ("tail_base", "hind_left_paw"),
    ("tail_base", "hind_right_paw"),
)
