"""Render calibration-board videos from known cameras: the input and ground truth of calibration tests.

`ratrig synth calibration OUT` writes, into OUT:
    <camera>.avi        one lossless (FFV1) video per camera, frame i of every video = the same instant
    board.toml          the board that was rendered
    calibration.toml    the true cameras (Anipose format)
    board_poses.toml    the true board pose (board -> world) of every frame

Frame 0 shows the board lying flat on the floor with its origin at the world origin and its x-axis
along the corridor (x), so `ratrig calibrate ... --floor-frame 0` must give back the true world frame.
The other frames move and tilt the board through the volume the cameras share; some put it partly out
of view of a camera, and some are blurred, as hand-held calibration videos are.

The renderer ray-casts every pixel (with the camera's lens distortion) onto the board plane and samples
the printed pattern, supersampled 2x2, so corner positions are exact up to the blur and noise added.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from calibration.board import BoardSpec, render_board, save_board
from ratrig.camera import Calibration, Camera, load_calibration
from ratrig.tomlio import write_toml

# Board frame -> world frame for a board lying face up on the floor: x stays, y and z flip (z up).
FLOOR_FLIP = np.diag([1.0, -1.0, -1.0])
TEXTURE_PX_PER_MM = 6.0
TEXTURE_MARGIN_MM = 15.0


class BoardRenderer:
    """Renders one board into one camera's images; precomputes the camera's pixel rays."""

    def __init__(self, camera: Camera, spec: BoardSpec, supersample: int = 2) -> None:
        import cv2

        self.camera = camera
        self.spec = spec
        self.ss = supersample
        w, h = camera.size
        # Supersample centres in full-resolution pixel coordinates (pixel centres at integers).
        xs = (np.arange(w * supersample) + 0.5) / supersample - 0.5
        ys = (np.arange(h * supersample) + 0.5) / supersample - 0.5
        gx, gy = np.meshgrid(xs, ys)
        pts = np.stack([gx.ravel(), gy.ravel()], axis=1).reshape(-1, 1, 2)
        und = cv2.undistortPointsIter(
            pts, camera.matrix, camera.dist, None, None,
            (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10),
        ).reshape(-1, 2)
        self.rays = np.hstack([und, np.ones((len(und), 1))]).astype(np.float64)  # camera frame, z = 1
        self.shape = (h * supersample, w * supersample)
        self.texture = render_board(spec, TEXTURE_PX_PER_MM, margin_mm=TEXTURE_MARGIN_MM).astype(np.float32)

    def render(self, r_board_world: np.ndarray, t_board_world_mm: np.ndarray, background: np.ndarray) -> np.ndarray:
        """Board pose (X_world = R X_board + t) -> (H, W) float32 image in 0-255 over `background` (H, W)."""
        import cv2

        cam = self.camera
        r_cb = cam.rotation_matrix @ r_board_world
        t_cb = cam.rotation_matrix @ t_board_world_mm + cam.tvec
        normal = r_cb[:, 2]
        denom = self.rays @ normal
        with np.errstate(divide="ignore", invalid="ignore"):
            s = float(normal @ t_cb) / denom
        hit = self.rays * s[:, None] - t_cb  # camera-frame offset from the board origin
        xb = hit @ r_cb[:, 0]
        yb = hit @ r_cb[:, 1]
        # Texture pixel coordinates; the pattern's outer corner is one square before the board origin.
        off = TEXTURE_MARGIN_MM + self.spec.square_mm
        u = ((xb + off) * TEXTURE_PX_PER_MM - 0.5).astype(np.float32)
        v = ((yb + off) * TEXTURE_PX_PER_MM - 0.5).astype(np.float32)
        behind = ~(s > 0)
        u[behind] = -1e6
        v[behind] = -1e6
        h_t, w_t = self.texture.shape
        inside = (u >= 0) & (u <= w_t - 1) & (v >= 0) & (v <= h_t - 1)
        tex = cv2.remap(
            self.texture, u.reshape(self.shape), v.reshape(self.shape), cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )
        bg = cv2.resize(background, (self.shape[1], self.shape[0]), interpolation=cv2.INTER_NEAREST)
        img = np.where(inside.reshape(self.shape), tex, bg)
        w, h = cam.size
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def _rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    import cv2

    axis = np.asarray(axis, np.float64)
    return cv2.Rodrigues(axis / np.linalg.norm(axis) * angle_rad)[0]


def shared_view_centre(calib: Calibration) -> tuple[np.ndarray, float]:
    """Point closest to all optical axes (least squares) and the median camera distance to it, mm."""
    a = np.zeros((3, 3))
    b = np.zeros(3)
    for cam in calib.cameras:
        d = cam.rotation_matrix[2]
        p = np.eye(3) - np.outer(d, d)
        a += p
        b += p @ cam.center_mm
    centre = np.linalg.solve(a, b)
    dist = float(np.median([np.linalg.norm(c.center_mm - centre) for c in calib.cameras]))
    return centre, dist


def visible_fraction(calib: Calibration, spec: BoardSpec, r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(C,) fraction of the board's inner corners inside each camera's image and in front of it."""
    pts = spec.object_points_mm() @ r.T + t
    out = []
    for cam in calib.cameras:
        uv = cam.project(pts)
        w, h = cam.size
        front = cam.depth_mm(pts) > 0
        # Facing test: a printed board is only detectable from its printed side (board z points away).
        normal = r[:, 2]
        facing = float(normal @ (t - cam.center_mm)) > 0
        ok = front & (uv[:, 0] >= 2) & (uv[:, 0] <= w - 3) & (uv[:, 1] >= 2) & (uv[:, 1] <= h - 3)
        out.append(ok.mean() if facing else 0.0)
    return np.array(out)


def board_poses(
    calib: Calibration, spec: BoardSpec, n_frames: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`n_frames` board poses (R, t: board -> world): frame 0 flat on the floor at the origin, the rest
    moved and tilted through the shared view, each seen whole or in part by at least two cameras."""
    centre, dist = shared_view_centre(calib)
    w_mm, h_mm = spec.printed_size_mm
    board_mid = np.array([w_mm / 2 - spec.square_mm, h_mm / 2 - spec.square_mm, 0.0])
    poses = [(FLOOR_FLIP.copy(), np.zeros(3))]
    half = np.array([0.45, 0.2, 0.15]) * dist
    tries = 0
    while len(poses) < n_frames:
        tries += 1
        if tries > 200 * n_frames:
            raise RuntimeError("could not place the board where two cameras see it; is the rig sensible?")
        tilt = _rotation(rng.normal(size=3) * [1, 1, 0], np.deg2rad(rng.uniform(0, 55)))
        yaw = _rotation([0, 0, 1], rng.uniform(-np.pi, np.pi))
        r = tilt @ yaw @ FLOOR_FLIP
        mid = centre + rng.uniform(-1, 1, 3) * half
        mid[2] = max(mid[2], 0.25 * max(w_mm, h_mm) + 10.0)  # keep a tilted board above the floor
        t = mid - r @ board_mid
        vis = visible_fraction(calib, spec, r, t)
        if np.sum(vis > 0.3) >= 2:
            poses.append((r, t))
    return poses


def render_calibration_set(
    calib: Calibration,
    spec: BoardSpec,
    out_dir: str | Path,
    n_frames: int = 50,
    seed: int = 0,
    blur_fraction: float = 0.15,
    fps: float = 30.0,
) -> dict[str, Path]:
    """Render and write the calibration videos, board.toml, calibration.toml and board_poses.toml.

    Returns the video path of each camera, by name.
    """
    import cv2

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    poses = board_poses(calib, spec, n_frames, rng)
    renderers = [BoardRenderer(cam, spec) for cam in calib.cameras]
    paths = {cam.name: out_dir / f"{cam.name}.avi" for cam in calib.cameras}
    writers = {}
    for cam in calib.cameras:
        writer = cv2.VideoWriter(str(paths[cam.name]), cv2.VideoWriter_fourcc(*"FFV1"), fps, tuple(cam.size))
        if not writer.isOpened():
            raise OSError(f"{paths[cam.name]}: OpenCV cannot write FFV1 video here")
        writers[cam.name] = writer
    try:
        for i, (r, t) in enumerate(poses):
            blur = i > 0 and rng.uniform() < blur_fraction
            gain = rng.uniform(0.75, 1.0)
            for ren, cam in zip(renderers, calib.cameras):
                w, h = cam.size
                bg = cv2.GaussianBlur(rng.uniform(60, 140, (h // 16 + 1, w // 16 + 1)).astype(np.float32), (0, 0), 1.0)
                img = ren.render(r, t, cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)) * gain
                if blur:
                    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.0, 2.0))
                img = img + rng.normal(0, 2.0, img.shape)
                frame = np.clip(img, 0, 255).astype(np.uint8)
                writers[cam.name].write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    finally:
        for wr in writers.values():
            wr.release()
    save_board(spec, out_dir / "board.toml")
    calib.save(out_dir / "calibration.toml")
    write_toml(
        out_dir / "board_poses.toml",
        {
            "description": "board -> world pose per frame: X_world = rotation @ X_board + translation (mm)",
            "frames": [{"rotation": r.tolist(), "translation": t.tolist()} for r, t in poses],
        },
    )
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """`ratrig synth calibration OUT [--frames N] [--seed S] [--calibration TRUE.toml]`."""
    p = argparse.ArgumentParser(
        prog="ratrig synth calibration",
        description="Render ChArUco calibration videos from the virtual cameras, with the true calibration.",
    )
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--frames", type=int, default=50, help="frame sets to render (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--calibration", type=Path, default=None,
        help="render from these cameras instead of the synthetic rig's default four",
    )
    p.add_argument("--squares", default="10x7")
    p.add_argument("--square-mm", type=float, default=25.0)
    p.add_argument("--marker-mm", type=float, default=18.75)
    args = p.parse_args(argv)
    from calibration.board import BoardError, parse_squares
    from ratrig.camera import CalibrationError

    try:
        sx, sy = parse_squares(args.squares)
        spec = BoardSpec("charuco", sx, sy, args.square_mm, args.marker_mm)
        if args.calibration is not None:
            calib = load_calibration(args.calibration)
        else:
            from synthetic.rig import default_rig

            calib = default_rig()
        if args.frames < 10:
            raise ValueError(f"--frames: need at least 10 frame sets to calibrate, got {args.frames}")
        paths = render_calibration_set(calib, spec, args.out, args.frames, args.seed)
    except (BoardError, CalibrationError, ValueError, OSError) as e:
        print(f"ratrig synth calibration: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} videos, board.toml, calibration.toml and board_poses.toml to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
