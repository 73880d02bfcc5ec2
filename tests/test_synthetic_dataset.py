"""Training samples for the pose network: labels sit on the drawn rat, and runs repeat."""
from __future__ import annotations

import cv2
import numpy as np

from synthetic.dataset import training_samples
from synthetic.render import Renderer
from synthetic.rig import Corridor, default_rig


def test_samples_are_labelled_on_the_rat_and_deterministic():
    a = list(training_samples(12, seed=5))
    b = list(training_samples(12, seed=5))
    assert len(a) == 12
    for sa, sb in zip(a, b):
        assert sa.camera_name == sb.camera_name and sa.t_s == sb.t_s
        assert np.array_equal(sa.image, sb.image)
    assert len({s.camera_name for s in a}) >= 2
    bg = Renderer(default_rig(), Corridor(), seed=5)
    names = default_rig().names
    for s in a:
        assert s.visible.sum() >= 4
        rat = np.abs(s.image.astype(int) - bg.background(names.index(s.camera_name)).astype(int)).max(axis=2) > 10
        # one pixel of slack: the 4 mm top edge of a clear wall may be drawn over a keypoint
        rat = cv2.dilate(rat.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        uv = np.round(s.keypoints_px[s.visible]).astype(int)
        assert rat[uv[:, 1], uv[:, 0]].all()
