"""A fast renderer of the synthetic rat in the corridor, and keypoint visibility.

The rat is a set of ellipsoids (head, ears, eyes, nose tip, four torso segments, paws) and capsules
(legs, tail) built from the keypoints and extra points alone (`body_parts`). An ellipsoid's image
under a pinhole camera is exactly an ellipse (the dual quadric projects to a dual conic); its outline
is sampled as a polygon, passed through the camera's lens distortion and filled with
`cv2.fillConvexPoly`, three nested fills per part for Lambert-like shading. Parts are drawn back to
front by the depth of their centres (painter's algorithm). The static scene (textured floor,
corridor walls, table) is ray-cast once per camera; opaque walls between the camera and the
corridor are pasted back over the rat, clear walls tint it.

Visibility of a keypoint in a camera: in front of the camera and inside the image, the segment from
the camera centre to the point crosses no opaque wall, and it passes through no body ellipsoid
other than the keypoint's own part(s).

Colours (BGR): white fur, pink paws / ears, darker pink nose tip, dark red eyes, pinkish tail, on a
dark floor, so a network can find the keypoints.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from ratrig.camera import Calibration, Camera
from ratrig.skeleton import KEYPOINTS
from synthetic.rat import EXTRA_NAMES
from synthetic.rig import Corridor

FUR_BGR = (222, 230, 236)
PAW_BGR = (165, 140, 245)
EAR_BGR = (170, 160, 235)
NOSE_BGR = (120, 95, 215)
EYE_BGR = (40, 25, 110)
TAIL_BGR = (170, 178, 212)
FLOOR_BGR = (62, 58, 55)
TABLE_BGR = (128, 132, 136)
WALL_BGR = (176, 180, 184)

_N_OUTLINE = 24  # polygon vertices per ellipse
_SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices
# Nested fills (scale of the outline, shift towards the lit top, brightness): Lambert-like shading.
_SHADES = ((1.0, 0.0, 0.66), (0.84, 0.12, 0.8), (0.64, 0.24, 0.93), (0.4, 0.36, 1.05))
# Torso segments are shaded together, level by level, so the body reads as one smooth solid.
_TORSO = ("neck", "chest", "belly", "rump")
_HEAD_ATTACHMENTS = ("nose_tip", "left_eye", "right_eye")


@dataclass(frozen=True, slots=True)
class NoiseOptions:
    """Image degradations, all off by default.

    sensor_noise_sigma: std of additive Gaussian noise, grey levels.
    blur_sigma_px: Gaussian blur (defocus), px.
    exposure_jitter: relative std of the exposure gain, varying smoothly in time plus per frame.
    """

    sensor_noise_sigma: float = 0.0
    blur_sigma_px: float = 0.0
    exposure_jitter: float = 0.0

    def __post_init__(self) -> None:
        for name in ("sensor_noise_sigma", "blur_sigma_px", "exposure_jitter"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"NoiseOptions.{name}: expected a number >= 0, got {v!r}")


@dataclass(frozen=True, slots=True)
class Appearance:
    """How the rat and the room look (renderer variants, `synthetic.variants`); defaults = the demo's.

    fur_bgr: body, head and leg colour; head_bgr: head colour (None: the fur's; a hooded rat's dark
    head); body_scale: size of the rat's solids relative to the default rat (the keypoints must be
    scaled the same way, `synthetic.variants.scale_trajectory`, about the point (mean keypoint x, y,
    z = 0)); light_gain: brightness of the whole image (exposure; values above 1 saturate the white
    fur); clutter: (N, 7) objects painted on the floor and table around the corridor: x mm, y mm,
    radius x mm, radius y mm, B, G, R (flat blobs on z = 0 that never hide the rat).
    """

    fur_bgr: tuple[float, float, float] = FUR_BGR
    head_bgr: tuple[float, float, float] | None = None
    body_scale: float = 1.0
    light_gain: float = 1.0
    clutter: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self) -> None:
        for name in ("body_scale", "light_gain"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"Appearance.{name}: expected a number > 0, got {v!r}")
        for i, obj in enumerate(self.clutter):
            if len(obj) != 7:
                raise ValueError(f"Appearance.clutter[{i}]: expected (x, y, rx, ry, b, g, r), got {obj!r}")


@dataclass(frozen=True, slots=True)
class BodyParts:
    """The rat's solids. P ellipsoids: centres (P, 3), semi-axis vectors as columns (P, 3, 3),
    colours (P, 3) BGR, names (P,). Q capsules: endpoints (Q, 2, 3), radii (Q,), colours (Q, 3)."""

    centers_mm: np.ndarray
    axes_mm: np.ndarray
    colors: np.ndarray
    names: tuple[str, ...]
    capsule_ends_mm: np.ndarray
    capsule_radius_mm: np.ndarray
    capsule_colors: np.ndarray
    capsule_paws: tuple[str, ...]  # the paw a leg capsule ends at, "" for tail segments


# Ellipsoids that may contain / touch a keypoint and so never hide it.
_OWNERS: dict[str, tuple[str, ...]] = {
    "nose": ("nose_tip",),
    "left_ear": ("left_ear",),
    "right_ear": ("right_ear",),
    "tail_base": ("rump",),
    "front_left_paw": ("front_left_paw",),
    "front_right_paw": ("front_right_paw",),
    "hind_left_paw": ("hind_left_paw",),
    "hind_right_paw": ("hind_right_paw",),
}
# Parts too small to hide anything worth counting.
_NON_OCCLUDERS = ("left_eye", "right_eye", "nose_tip")


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product of (..., 3) arrays; np.cross costs ~50 us a call, this a few."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


def _inv3(m: np.ndarray) -> np.ndarray:
    """Inverse of (..., 3, 3) matrices by the adjugate: no LAPACK call, no BLAS threads."""
    c0 = _cross(m[..., :, 1], m[..., :, 2])
    c1 = _cross(m[..., :, 2], m[..., :, 0])
    c2 = _cross(m[..., :, 0], m[..., :, 1])
    det = np.sum(m[..., :, 0] * c0, axis=-1)
    return np.stack([c0, c1, c2], axis=-2) / det[..., None, None]


@functools.lru_cache(maxsize=8)
def _foreign_mask(part_names: tuple[str, ...]) -> np.ndarray:
    """(K, P) bool: part p may hide keypoint k (not its owner, not a tiny part)."""
    return np.array([[p not in _OWNERS.get(k, ()) and p not in _NON_OCCLUDERS for p in part_names]
                     for k in KEYPOINTS])


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-9)


def _frame_along(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit forward `d` (3,) -> (forward, left, up) orthonormal, up as close to +z as possible."""
    f = _unit(d)
    left = _cross(np.array([0.0, 0.0, 1.0]), f)
    if np.linalg.norm(left) < 1e-6:
        left = np.array([0.0, 1.0, 0.0])
    left = _unit(left)
    up = _cross(f, left)
    return f, left, up


def _segment(p: np.ndarray, q: np.ndarray, half_w: float, half_h: float, overlap: float
             ) -> tuple[np.ndarray, np.ndarray]:
    f, left, up = _frame_along(q - p)
    a = np.linalg.norm(q - p) / 2.0 + overlap
    return (p + q) / 2.0, np.stack([a * f, half_w * left, half_h * up], axis=1)


def body_parts(keypoints_mm: np.ndarray, extra_mm: np.ndarray) -> BodyParts:
    """(K, 3) keypoints in KEYPOINTS order, (E, 3) extras in EXTRA_NAMES order -> BodyParts."""
    k = {n: np.asarray(keypoints_mm[i], np.float64) for i, n in enumerate(KEYPOINTS)}
    e = {n: np.asarray(extra_mm[i], np.float64) for i, n in enumerate(EXTRA_NAMES)}
    names: list[str] = []
    centers: list[np.ndarray] = []
    axes: list[np.ndarray] = []
    colors: list[tuple[int, int, int]] = []

    def add(name: str, c: np.ndarray, a: np.ndarray, col: tuple[int, int, int]) -> None:
        names.append(name)
        centers.append(c)
        axes.append(a)
        colors.append(col)

    ear_mid = (k["left_ear"] + k["right_ear"]) / 2.0
    # The ears sit on top of the skull: its axis runs from below and behind them to the nose.
    flat = k["nose"] - ear_mid
    flat[2] = 0.0
    back = ear_mid - 8.0 * _unit(flat) - np.array([0.0, 0.0, 13.0])
    hf, hl, hu = _frame_along(k["nose"] - back)
    head_len = np.linalg.norm(k["nose"] - back) / 2.0
    head_c = k["nose"] - head_len * hf  # the nose keypoint is exactly the head's front tip
    add("head", head_c, np.stack([head_len * hf, 13.0 * hl, 12.0 * hu], axis=1), FUR_BGR)
    add("nose_tip", k["nose"] - 1.5 * hf, np.diag([4.0, 4.0, 4.0]), NOSE_BGR)
    for side, s in (("left", 1.0), ("right", -1.0)):
        eye = head_c + 0.35 * head_len * hf + s * 9.5 * hl + 5.0 * hu
        add(f"{side}_eye", eye, np.diag([3.2, 3.2, 3.2]), EYE_BGR)
        ear = k[f"{side}_ear"]
        # A disc facing forward and outward.
        n = _unit(hf + 0.6 * s * hl)
        t1 = _unit(_cross(hu, n))
        add(f"{side}_ear", ear, np.stack([8.5 * hu, 8.0 * t1, 2.2 * n], axis=1), EAR_BGR)
    c, a = _segment(back, e["spine_1"], 16.0, 17.0, 8.0)
    add("neck", c, a, FUR_BGR)
    c, a = _segment(e["spine_1"], e["spine_2"], 24.0, 24.0, 10.0)
    add("chest", c, a, FUR_BGR)
    c, a = _segment(e["spine_2"], e["spine_3"], 26.0, 26.0, 10.0)
    add("belly", c, a, FUR_BGR)
    rf, rl, ru = _frame_along(k["tail_base"] - e["spine_3"])
    ra = np.linalg.norm(k["tail_base"] - e["spine_3"]) / 2.0 + 8.0
    add("rump", k["tail_base"] - ra * rf, np.stack([ra * rf, 22.0 * rl, 21.0 * ru], axis=1), FUR_BGR)
    heading = e["spine_1"] - e["spine_3"]
    heading[2] = 0.0
    pf, pl, pu = _frame_along(heading)
    for paw in ("front_left_paw", "front_right_paw", "hind_left_paw", "hind_right_paw"):
        size = (7.0, 5.0, 3.5) if paw.startswith("front") else (10.0, 6.0, 4.0)
        add(paw, k[paw], np.stack([size[0] * pf, size[1] * pl, size[2] * pu], axis=1), PAW_BGR)

    ends: list[tuple[np.ndarray, np.ndarray]] = []
    radii: list[float] = []
    ccols: list[tuple[int, int, int]] = []
    cpaws: list[str] = []
    for paw, root, lat in (("front_left_paw", "spine_1", 12.0), ("front_right_paw", "spine_1", -12.0),
                           ("hind_left_paw", "spine_3", 17.0), ("hind_right_paw", "spine_3", -17.0)):
        top = e[root] + lat * pl - np.array([0.0, 0.0, 12.0])
        ends.append((top, k[paw]))
        radii.append(3.2 if paw.startswith("front") else 4.0)
        ccols.append(FUR_BGR)
        cpaws.append(paw)
    # Tail: quadratic Bezier through tail_base, tail_mid, tail_tip, tapering.
    p0, p1, p2 = k["tail_base"], e["tail_mid"], e["tail_tip"]
    ctrl = 2.0 * p1 - 0.5 * (p0 + p2)
    u = np.linspace(0.0, 1.0, 9)[:, None]
    curve = (1 - u) ** 2 * p0 + 2 * (1 - u) * u * ctrl + u ** 2 * p2
    for i in range(len(curve) - 1):
        ends.append((curve[i], curve[i + 1]))
        radii.append(4.5 - 3.0 * i / (len(curve) - 1))
        ccols.append(TAIL_BGR)
        cpaws.append("")
    # A keypoint must never end up inside a part that does not own it (an ear over the neck when
    # the head turns hard, a paw against the chest when rearing): shrink that part until the
    # point is on its surface, so visibility and the picture stay consistent.
    axes_arr = np.array(axes)
    centers_arr = np.array(centers)
    kp_arr = np.asarray(keypoints_mm, np.float64)
    local = np.einsum("pij,kpj->kpi", _inv3(axes_arr), kp_arr[:, None, :] - centers_arr[None])
    r = np.sqrt(np.sum(local * local, axis=2))  # (K, P) ellipsoid "radius" of each keypoint
    inside = (r < 1.0) & _foreign_mask(tuple(names))
    if inside.any():
        factor = np.where(inside, r, 1.0).min(axis=0)
        axes_arr = axes_arr * np.maximum(factor, 0.2)[:, None, None]
    return BodyParts(
        centers_mm=centers_arr, axes_mm=axes_arr, colors=np.array(colors, np.float64),
        names=tuple(names), capsule_ends_mm=np.array([np.stack(p) for p in ends]),
        capsule_radius_mm=np.array(radii), capsule_colors=np.array(ccols, np.float64),
        capsule_paws=tuple(cpaws),
    )


def scaled_body_parts(keypoints_mm: np.ndarray, extra_mm: np.ndarray, scale: float) -> BodyParts:
    """`body_parts` of a rat `scale` times the default size: (K, 3), (E, 3) keypoints of the scaled
    rat -> its solids. Scaling is about c = (mean keypoint x, y, 0), so paws on the floor stay there:
    the solids of the default-size rat with keypoints c + (p - c) / scale, mapped back by
    c + scale * (q - c), semi-axes and radii times scale."""
    if scale == 1.0:
        return body_parts(keypoints_mm, extra_mm)
    kp = np.asarray(keypoints_mm, np.float64)
    ex = np.asarray(extra_mm, np.float64)
    c = np.array([kp[:, 0].mean(), kp[:, 1].mean(), 0.0])
    base = body_parts(c + (kp - c) / scale, c + (ex - c) / scale)
    return BodyParts(
        centers_mm=c + scale * (base.centers_mm - c), axes_mm=base.axes_mm * scale, colors=base.colors,
        names=base.names, capsule_ends_mm=c + scale * (base.capsule_ends_mm - c),
        capsule_radius_mm=base.capsule_radius_mm * scale, capsule_colors=base.capsule_colors,
        capsule_paws=base.capsule_paws)


def recolour(parts: BodyParts, fur_bgr: tuple[float, float, float], head_bgr: tuple[float, float, float] | None
             ) -> BodyParts:
    """Parts with the default white fur replaced by `fur_bgr` (legs too), the head by `head_bgr`."""
    fur = np.asarray(FUR_BGR, np.float64)
    colors = parts.colors.copy()
    colors[np.all(colors == fur, axis=1)] = fur_bgr
    if head_bgr is not None:
        colors[parts.names.index("head")] = head_bgr
    ccols = parts.capsule_colors.copy()
    ccols[np.all(ccols == fur, axis=1)] = fur_bgr
    return BodyParts(parts.centers_mm, parts.axes_mm, colors, parts.names, parts.capsule_ends_mm,
                     parts.capsule_radius_mm, ccols, parts.capsule_paws)


# ----------------------------------------------------------------------------------------------
# Geometry helpers


def _distort(cam: Camera, uv: np.ndarray) -> np.ndarray:
    """(N, 2) undistorted pinhole pixels -> (N, 2) pixels with the camera's lens distortion."""
    m = cam.matrix
    x = (uv[:, 0] - m[0, 2]) / m[0, 0]
    y = (uv[:, 1] - m[1, 2]) / m[1, 1]
    k1, k2, p1, p2, k3 = (list(np.asarray(cam.dist, float).ravel()) + [0.0] * 5)[:5]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 ** 3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd * m[0, 0] + m[0, 2], yd * m[1, 1] + m[1, 2]], axis=1)


def _ellipse_outlines(P: np.ndarray, centers: np.ndarray, axes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact pinhole images of ellipsoids.

    (3, 4) projection, (N, 3) centres, (N, 3, 3) semi-axes -> (N, M, 2) outline points and
    (N, 2) image centres of the ellipses, undistorted pixels.
    """
    n = len(centers)
    qstar = np.zeros((n, 4, 4))
    qstar[:, :3, :3] = axes @ np.transpose(axes, (0, 2, 1)) - centers[:, :, None] * centers[:, None, :]
    qstar[:, :3, 3] = -centers
    qstar[:, 3, :3] = -centers
    qstar[:, 3, 3] = -1.0
    cstar = P[None] @ qstar @ P.T[None]
    cstar = cstar / (-cstar[:, 2:3, 2:3])
    m = -cstar[:, :2, 2]
    s = cstar[:, :2, :2] + m[:, :, None] * m[:, None, :]
    w, v = np.linalg.eigh(s)
    w = np.sqrt(np.maximum(w, 1e-6))
    ang = np.linspace(0.0, 2 * np.pi, _N_OUTLINE, endpoint=False)
    circle = np.stack([np.cos(ang), np.sin(ang)], axis=0)  # (2, M)
    pts = m[:, :, None] + v @ (w[:, :, None] * circle[None])
    return np.transpose(pts, (0, 2, 1)), m


def _pinhole(P: np.ndarray, pts: np.ndarray) -> np.ndarray:
    h = pts @ P[:, :3].T + P[:, 3]
    return h[:, :2] / h[:, 2:3]


# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _CameraScene:
    camera: Camera
    P: np.ndarray  # (3, 4) K [R | t]
    background: np.ndarray  # (H, W, 3) uint8, the finished static scene
    under: np.ndarray  # (H, W, 3) uint8, the scene without what lies in front of the corridor
    tint_mask: np.ndarray | None  # (H, W) uint8, clear wall between camera and corridor
    tint_layer: np.ndarray | None  # (H, W, 3) uint8 light the clear wall adds
    copy_mask: np.ndarray  # (H, W) uint8, opaque things in front of the corridor (walls, edges)


_CLEAR_WALL_KEEP = 0.86  # fraction of light through a clear wall


class Renderer:
    """Draws the rat into any camera of a calibration.

    Args:
        calibration: the cameras (e.g. `synthetic.rig.default_rig()`).
        corridor: geometry of walls and floor (default `Corridor()`).
        seed: seeds floor/wall textures and image noise.
        noise: image degradations (default none).
        appearance: rat coat and size, light, clutter (default: the demo's white rat, no clutter).
    """

    def __init__(self, calibration: Calibration, corridor: Corridor | None = None, seed: int = 0,
                 noise: NoiseOptions | None = None, appearance: Appearance | None = None) -> None:
        self.calibration = calibration
        self.corridor = corridor or Corridor()
        self.seed = int(seed)
        self.noise = noise or NoiseOptions()
        self.appearance = appearance or Appearance()
        rng = np.random.default_rng([self.seed, 7])
        tex = _textures(rng)
        self._scenes = tuple(_build_scene(c, self.corridor, tex, self.appearance.clutter)
                             for c in calibration.cameras)
        self._noise_bank: list[tuple[np.ndarray, np.ndarray]] = []
        if self.noise.sensor_noise_sigma > 0:
            w, h = calibration.cameras[0].size
            for _ in range(6):
                n = rng.normal(0.0, self.noise.sensor_noise_sigma, (h, w, 3))
                self._noise_bank.append((np.clip(n, 0, 255).astype(np.uint8),
                                         np.clip(-n, 0, 255).astype(np.uint8)))
        self._exposure_phase = rng.uniform(0, 2 * np.pi, (len(calibration.cameras), 3))
        self._calls = 0

    @property
    def camera_names(self) -> tuple[str, ...]:
        return self.calibration.names

    def _index(self, camera: int | str) -> int:
        if isinstance(camera, (int, np.integer)):
            if not 0 <= int(camera) < len(self._scenes):
                raise IndexError(f"camera index {camera} out of range (have {len(self._scenes)} cameras)")
            return int(camera)
        names = self.calibration.names
        if camera not in names:
            raise KeyError(f"no camera named {camera!r} (have {list(names)})")
        return names.index(camera)

    def background(self, camera: int | str) -> np.ndarray:
        """The static scene of a camera without the rat, (H, W, 3) uint8 BGR (a copy)."""
        return self._scenes[self._index(camera)].background.copy()

    def render(self, camera: int | str, keypoints_mm: np.ndarray, extra_mm: np.ndarray,
               t_s: float | None = None) -> np.ndarray:
        """Draw the rat.

        Args:
            camera: index or name in the calibration.
            keypoints_mm: (K, 3) in KEYPOINTS order; extra_mm: (E, 3) in EXTRA_NAMES order.
            t_s: capture time; makes noise and exposure a deterministic function of (seed, camera,
                t_s). Without it they come from a per-call counter.

        Returns:
            (H, W, 3) uint8 BGR image.
        """
        ci = self._index(camera)
        scene = self._scenes[ci]
        img = scene.background.copy()
        self._draw_rat(img, scene, self._parts(keypoints_mm, extra_mm, colour=True))
        if self.appearance.light_gain != 1.0:
            img = cv2.convertScaleAbs(img, alpha=self.appearance.light_gain)
        return self._degrade(img, ci, t_s)

    def _parts(self, keypoints_mm: np.ndarray, extra_mm: np.ndarray, colour: bool = False) -> BodyParts:
        a = self.appearance
        parts = scaled_body_parts(keypoints_mm, extra_mm, a.body_scale)
        if colour and (a.fur_bgr != FUR_BGR or a.head_bgr is not None):
            parts = recolour(parts, a.fur_bgr, a.head_bgr)
        return parts

    def _draw_rat(self, img: np.ndarray, scene: _CameraScene, parts: BodyParts) -> None:
        cam, P = scene.camera, scene.P
        ne = len(parts.centers_mm)
        outlines, _ = _ellipse_outlines(P, parts.centers_mm, parts.axes_mm)
        # Light from above: shift the inner shades towards the image of each part's top.
        up = parts.axes_mm[:, :, 2] * np.sign(parts.axes_mm[:, 2, 2] + 1e-12)[:, None]
        light = _pinhole(P, parts.centers_mm + 0.55 * up) - _pinhole(P, parts.centers_mm)
        m = outlines.mean(axis=1)
        polys = np.stack([m[:, None] + off * light[:, None] + scale * (outlines - m[:, None])
                          for scale, off, _b in _SHADES], axis=1)  # (N, S, M, 2)
        flat = _distort(cam, polys.reshape(-1, 2)).reshape(polys.shape)
        fixed = np.round(flat * (1 << _SHIFT)).astype(np.int32)
        depth = cam.depth_mm(parts.centers_mm)
        fpx = float(cam.matrix[0, 0])
        # Capsules (legs, tail): projected endpoints and widths.
        ce = parts.capsule_ends_mm.reshape(-1, 3)
        cuv = cam.project(ce).reshape(-1, 2, 2)
        cdepth = cam.depth_mm(ce).reshape(-1, 2).mean(axis=1)
        cwidth = np.maximum(1, np.round(2 * parts.capsule_radius_mm * fpx / cdepth)).astype(int)
        # Torso: a lit stripe along the back on top of the segment fills.
        torso = [i for i, n in enumerate(parts.names) if n in _TORSO]
        tc, ta = parts.centers_mm[torso], parts.axes_mm[torso]
        stripe = np.concatenate([tc - 0.55 * ta[:, :, 0] + 0.5 * ta[:, :, 2],
                                 tc + 0.55 * ta[:, :, 0] + 0.5 * ta[:, :, 2]])
        suv = cam.project(stripe).reshape(2, len(torso), 2)
        swidth = 2 * np.linalg.norm(ta[:, :, 1], axis=1) * fpx / depth[torso]

        # Region of interest: where the rat can change pixels.
        h, w = img.shape[:2]
        allpts = np.concatenate([flat[:, 0].reshape(-1, 2), cuv.reshape(-1, 2)])
        pad = int(cwidth.max()) + 3
        x0 = int(np.clip(np.floor(allpts[:, 0].min()) - pad, 0, w))
        x1 = int(np.clip(np.ceil(allpts[:, 0].max()) + pad, 0, w))
        y0 = int(np.clip(np.floor(allpts[:, 1].min()) - pad, 0, h))
        y1 = int(np.clip(np.ceil(allpts[:, 1].max()) + pad, 0, h))
        if x1 <= x0 or y1 <= y0:
            return
        sub = img[y0:y1, x0:x1]
        sub[...] = scene.under[y0:y1, x0:x1]

        sort_depth = depth.copy()
        # Things stuck on the head go just in front of it when they face the camera, else just
        # behind it: the same answer the ray test of `visibility` gives for a convex head.
        head = parts.names.index("head")
        eye = cam.center_mm
        for i, n in enumerate(parts.names):
            if n in _HEAD_ATTACHMENTS:
                out = parts.centers_mm[i] - parts.centers_mm[head]
                facing = float(np.dot(eye - parts.centers_mm[i], out)) > 0
                sort_depth[i] = depth[head] + (-0.01 if facing else 0.01)
        items = [(sort_depth[i], 0, i) for i in range(ne) if parts.names[i] not in _TORSO]
        items.append((float(np.mean(depth[torso])), 2, -1))
        # A leg is drawn just before its paw, so the paw's colour stays on top.
        leg_depth = cdepth.copy()
        for j, paw in enumerate(parts.capsule_paws):
            if paw:
                leg_depth[j] = max(cdepth[j], depth[parts.names.index(paw)] + 0.01)
        items += [(leg_depth[j], 1, j) for j in range(len(cuv))]
        items.sort(key=lambda it: -it[0])
        one = 1 << _SHIFT
        for _, kind, i in items:
            if kind == 0:
                base = parts.colors[i]
                for s, (_, _, bright) in enumerate(_SHADES):
                    col = tuple(float(min(255.0, c * bright)) for c in base)
                    cv2.fillConvexPoly(img, fixed[i, s], col, cv2.LINE_AA, _SHIFT)
            elif kind == 2:
                order = sorted(range(len(torso)), key=lambda j: -depth[torso[j]])
                for s in (0, 1):
                    col = tuple(float(min(255.0, c * _SHADES[s][2])) for c in parts.colors[torso[0]])
                    for j in order:
                        cv2.fillConvexPoly(img, fixed[torso[j], s], col, cv2.LINE_AA, _SHIFT)
                for frac, bright in ((0.62, 0.93), (0.32, 1.04)):
                    col = tuple(float(min(255.0, c * bright)) for c in parts.colors[torso[0]])
                    for j in order:
                        a = np.round(suv[0, j] * one).astype(int)
                        b = np.round(suv[1, j] * one).astype(int)
                        cv2.line(img, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), col,
                                 max(1, int(round(frac * swidth[j]))), cv2.LINE_AA, _SHIFT)
            else:
                a = np.round(cuv[i, 0] * one).astype(int)
                b = np.round(cuv[i, 1] * one).astype(int)
                col = tuple(float(c * 0.9) for c in parts.capsule_colors[i])
                cv2.line(img, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), col, int(cwidth[i]),
                         cv2.LINE_AA, _SHIFT)
        _overlay_front(scene, sub, (x0, y0, x1, y1))

    def _degrade(self, img: np.ndarray, ci: int, t_s: float | None) -> np.ndarray:
        opt = self.noise
        if opt.sensor_noise_sigma == 0 and opt.blur_sigma_px == 0 and opt.exposure_jitter == 0:
            return img
        key = int(round(t_s * 1e6)) if t_s is not None else self._calls
        self._calls += 1
        rng = np.random.default_rng([self.seed, ci, key & 0x7FFFFFFFFFFF])
        if opt.blur_sigma_px > 0:
            img = cv2.GaussianBlur(img, (0, 0), opt.blur_sigma_px)
        if opt.exposure_jitter > 0:
            t = t_s if t_s is not None else 0.0
            ph = self._exposure_phase[ci]
            slow = (np.sin(0.31 * t + ph[0]) + np.sin(0.13 * t + ph[1])) / np.sqrt(2.0)
            gain = 1.0 + opt.exposure_jitter * (0.8 * slow + 0.6 * rng.normal())
            img = cv2.convertScaleAbs(img, alpha=float(max(0.2, gain)))
        if self._noise_bank:
            pos, neg = self._noise_bank[int(rng.integers(len(self._noise_bank)))]
            shift = int(rng.integers(0, 64)) * 3
            if shift:
                pos = pos.reshape(-1)[shift:]
                neg = neg.reshape(-1)[shift:]
                flat = img.reshape(-1)
                cv2.add(flat[:-shift], pos, dst=flat[:-shift])
                cv2.subtract(flat[:-shift], neg, dst=flat[:-shift])
            else:
                cv2.add(img, pos, dst=img)
                cv2.subtract(img, neg, dst=img)
        return img

    def visibility(self, camera: int | str, keypoints_mm: np.ndarray, extra_mm: np.ndarray) -> np.ndarray:
        """(K, 3) keypoints, (E, 3) extras -> (K,) bool: in the image, not behind an opaque wall,
        not hidden by the rat's body."""
        cam = self._scenes[self._index(camera)].camera
        kp = np.asarray(keypoints_mm, np.float64)
        vis = in_image(cam, kp)
        if not self.corridor.clear_walls:
            vis &= ~behind_walls(cam.center_mm, kp, self.corridor)
        vis &= ~hidden_by_body(cam.center_mm, kp, self._parts(kp, extra_mm))
        return vis


def in_image(cam: Camera, points_mm: np.ndarray) -> np.ndarray:
    """(N, 3) world points -> (N,) bool: in front of the camera and inside the image."""
    uv = cam.project(points_mm)
    w, h = cam.size
    d = cam.depth_mm(points_mm)
    return (d > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1)


def _walls(corridor: Corridor) -> list[tuple[int, float, int, tuple[float, float]]]:
    """Wall rectangles: (axis of the plane normal, plane value, other horizontal axis, its range)."""
    hl, hw = corridor.length_mm / 2.0, corridor.width_mm / 2.0
    return [(1, hw, 0, (-hl, hl)), (1, -hw, 0, (-hl, hl)), (0, hl, 1, (-hw, hw)), (0, -hl, 1, (-hw, hw))]


def behind_walls(center_mm: np.ndarray, points_mm: np.ndarray, corridor: Corridor) -> np.ndarray:
    """(3,) camera centre, (N, 3) points -> (N,) bool: the sight line crosses a wall."""
    c = np.asarray(center_mm, np.float64)
    p = np.asarray(points_mm, np.float64)
    out = np.zeros(len(p), bool)
    for axis, value, other, (lo, hi) in _walls(corridor):
        denom = p[:, axis] - c[axis]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (value - c[axis]) / denom
            hit = c + t[:, None] * (p - c)
        inside = (t > 0) & (t < 1 - 1e-9) & (hit[:, other] >= lo) & (hit[:, other] <= hi) \
            & (hit[:, 2] >= 0) & (hit[:, 2] <= corridor.wall_height_mm)
        out |= inside
    return out


def hidden_by_body(center_mm: np.ndarray, keypoints_mm: np.ndarray, parts: BodyParts,
                   margin_mm: float = 1.5) -> np.ndarray:
    """(3,) camera centre, (K, 3) keypoints (KEYPOINTS order), parts -> (K,) bool hidden.

    A keypoint is hidden when the sight line enters an ellipsoid that is not one of its owners
    more than `margin_mm` before reaching the point.
    """
    c = np.asarray(center_mm, np.float64)
    kp = np.asarray(keypoints_mm, np.float64)
    inv = _inv3(parts.axes_mm)  # (P, 3, 3)
    o = np.einsum("pij,pj->pi", inv, c[None] - parts.centers_mm)  # (P, 3) camera in unit-sphere coords
    seg = kp - c  # (K, 3)
    length = np.linalg.norm(seg, axis=1)
    d = np.einsum("pij,kj->pki", inv, seg)  # (P, K, 3)
    a = np.sum(d * d, axis=2)
    b = 2 * np.einsum("pki,pi->pk", d, o)
    cc = np.sum(o * o, axis=1)[:, None] - 1.0
    disc = b * b - 4 * a * cc
    ok = disc > 0
    sq = np.sqrt(np.where(ok, disc, 0.0))
    t_in = (-b - sq) / (2 * a)
    t_out = (-b + sq) / (2 * a)
    limit = 1.0 - margin_mm / length[None, :]
    blocks = ok & (t_out > 0) & (t_in < limit)
    return np.any(blocks & _foreign_mask(parts.names).T, axis=0)


# ----------------------------------------------------------------------------------------------
# Static scene


def _textures(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Procedural textures at 2 mm per texel, float32 in [-1, 1]."""
    def noise(shape: tuple[int, int], scales: tuple[float, ...]) -> np.ndarray:
        out = np.zeros(shape, np.float32)
        for s in scales:
            small = rng.normal(0, 1, (max(2, int(shape[0] / s)), max(2, int(shape[1] / s)))).astype(np.float32)
            out += cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
        return np.clip(out / (np.abs(out).max() + 1e-6), -1, 1)

    # Only coarse texture: fine grain would make the lossless videos huge (sensor noise is an option).
    return {"floor": noise((512, 512), (3.0, 12.0, 48.0)), "table": noise((512, 512), (8.0, 48.0)),
            "wall": noise((256, 256), (4.0, 16.0))}


def _sample(tex: np.ndarray, u_mm: np.ndarray, v_mm: np.ndarray) -> np.ndarray:
    """Bilinear texture lookup with wrap-around, 2 mm per texel."""
    u_mm = np.where(np.isfinite(u_mm), u_mm, 0.0)
    v_mm = np.where(np.isfinite(v_mm), v_mm, 0.0)
    mx = u_mm / 2.0
    my = v_mm / 2.0
    h, w = tex.shape
    mx = np.mod(mx, w).astype(np.float32)
    my = np.mod(my, h).astype(np.float32)
    return cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def _build_scene(cam: Camera, corridor: Corridor, tex: dict[str, np.ndarray],
                 clutter: tuple[tuple[float, ...], ...] = ()) -> _CameraScene:
    w, h = cam.size
    uu, vv = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    norm = cam.undistort(np.stack([uu.ravel(), vv.ravel()], axis=1)).reshape(h, w, 2)
    rays_cam = np.concatenate([norm, np.ones((h, w, 1))], axis=2)
    R = cam.rotation_matrix
    d = rays_cam @ R  # world directions (row vector times R == R^T d)
    c = cam.center_mm
    hl, hw, hh = corridor.length_mm / 2.0, corridor.width_mm / 2.0, corridor.wall_height_mm

    # Floor (z = 0).
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(d[..., 2] < 0, -c[2] / d[..., 2], np.inf)
    fx = c[0] + t_floor * d[..., 0]
    fy = c[1] + t_floor * d[..., 1]
    in_corr = (np.abs(fx) <= hl) & (np.abs(fy) <= hw)
    floor_t = _sample(tex["floor"], fx, fy)
    table_t = _sample(tex["table"], fx, fy)
    col = np.where(in_corr[..., None], np.array(FLOOR_BGR) * (1 + 0.25 * floor_t[..., None]),
                   np.array(TABLE_BGR) * (1 + 0.12 * table_t[..., None]))
    for x, y, rx, ry, b, g, r_ in clutter:  # flat blobs on the floor/table: (fx, fy) inside the ellipse
        blob = ((fx - x) / rx) ** 2 + ((fy - y) / ry) ** 2 <= 1.0
        shade = 1 + 0.1 * floor_t[..., None]
        col = np.where(blob[..., None], np.array([b, g, r_], np.float64) * shade, col)
    # Distance fall-off of the overhead light, gentle.
    r = np.hypot(fx, fy)
    col = col * (1.0 - 0.25 * np.clip(r / 1500.0, 0, 1))[..., None]
    col = np.where(np.isfinite(t_floor)[..., None], col, np.array([40.0, 40.0, 40.0]))
    nearest = t_floor.copy()

    front = np.zeros((h, w), bool)
    wall_layers = []
    for axis, value, other, (lo, hi) in _walls(corridor):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (value - c[axis]) / d[..., axis]
        hx = c[other] + t * d[..., other]
        hz = c[2] + t * d[..., 2]
        hit = (t > 0) & (hx >= lo) & (hx <= hi) & (hz >= 0) & (hz <= hh)
        outer = (c[axis] - value) * np.sign(value) > 0  # camera outside this wall
        wall_layers.append((t, hit, hx, hz, outer, axis))
        if outer:
            front |= hit & (t < t_floor)

    under = col.copy()
    copy = np.zeros((h, w), bool)
    if corridor.clear_walls:
        # Acrylic: a faint tint for every wall crossed before the floor, bright top edges.
        tint = np.array(WALL_BGR) * 0.10
        for t, hit, hx, hz, outer, axis in wall_layers:
            seen = hit & (t < nearest)
            edge = seen & (hz > hh - 4.0)
            if outer:  # in front of the corridor: applied over the rat too, below
                copy |= edge
                continue
            under = np.where(seen[..., None], under * _CLEAR_WALL_KEEP + tint, under)
            under = np.where(edge[..., None], np.array([225.0, 228.0, 230.0]), under)
        under8 = np.clip(under, 0, 255).astype(np.uint8)
        tint_layer = np.broadcast_to(np.clip(tint, 0, 255).astype(np.uint8), (h, w, 3)).copy()
        tint_mask = (front.astype(np.uint8) * 255)
        bg = under8.copy()
        _apply_tint(bg, tint_layer, tint_mask)
        edge_col = np.array([225, 228, 230], np.uint8)
        bg[copy] = edge_col
    else:
        for t, hit, hx, hz, outer, axis in wall_layers:
            seen = hit & (t < nearest)
            wt = _sample(tex["wall"], hx, hz)
            shade = 0.95 if outer else 0.75  # inner faces are in the corridor's shade
            wcol = np.array(WALL_BGR) * (shade + 0.05 * wt[..., None]) \
                * (0.85 + 0.15 * np.clip(hz / hh, 0, 1))[..., None]
            wcol = np.where((hz > hh - 5.0)[..., None], np.array([205.0, 208.0, 210.0]), wcol)
            col = np.where(seen[..., None], wcol, col)
            nearest = np.where(seen, t, nearest)
        bg = np.clip(col, 0, 255).astype(np.uint8)
        under8 = bg
        tint_layer = tint_mask = None
        copy = front
    P = cam.matrix @ cam.extrinsic
    return _CameraScene(cam, P, bg, under8, tint_mask, tint_layer, copy.astype(np.uint8) * 255)


def _apply_tint(img: np.ndarray, tint_layer: np.ndarray, tint_mask: np.ndarray) -> None:
    """In place: pixels under `tint_mask` become keep * img + tint (a clear wall in front)."""
    tinted = cv2.addWeighted(img, _CLEAR_WALL_KEEP, tint_layer, 1.0, 0.0)
    cv2.copyTo(tinted, tint_mask, img)


def _overlay_front(scene: _CameraScene, sub: np.ndarray, roi: tuple[int, int, int, int]) -> None:
    """Re-apply what lies between the camera and the corridor over the rat's region `sub`."""
    x0, y0, x1, y1 = roi
    if scene.tint_mask is not None and scene.tint_layer is not None:
        _apply_tint(sub, scene.tint_layer[y0:y1, x0:x1], scene.tint_mask[y0:y1, x0:x1])
    cv2.copyTo(scene.background[y0:y1, x0:x1], scene.copy_mask[y0:y1, x0:x1], sub)
