"""Online triangulation: undistort, likelihood-weighted linear triangulation (DLT), outlier rejection.

The one triangulation kernel of the project: live fusion, replay, tests and benchmarks all call
`triangulate` (or `triangulate_linear`, the same kernel with weighting and rejection switched off).

Camera model: OpenCV's pinhole with 5-term distortion (k1, k2, p1, p2, k3), plus the skew term
``matrix[0, 1]`` that MATLAB calibrations carry (OpenCV's own projectPoints/undistortPoints ignore
it; with skew 0 the two models are identical). Undistortion inverts the distortion with OpenCV's
fixed-point iteration, but runs it to convergence instead of OpenCV's default 5 iterations.

DLT: for each view the two rows ``x * P[2] - P[0]``, ``y * P[2] - P[1]`` with ``P = [R | t]`` and
(x, y) the undistorted normalised coordinates -- the same system as aniposelib's
``triangulate_simple`` -- each view's rows scaled by its weight (the 2D likelihood), solved for the
right singular vector of the smallest singular value. The SVD is a one-sided Jacobi SVD written
out in loops: accurate for the badly column-scaled DLT matrix (rotation columns ~1, translation
column ~1000 mm) and cheap for numba to compile (no LAPACK, no matrix inverse). Kernels use
numba's ``error_model="numpy"``: a degenerate division gives inf/NaN (and a NaN row), never an exception.

Per keypoint the result carries Anipose's pose-3d CSV fields: x, y, z (mm), error (mean
reprojection error of the views used, px), ncams (views used) and score (the smallest likelihood
among the views used, as Anipose computes it).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from ratrig.camera import Calibration

#: Undistortion stops when one fixed-point step moves the normalised point less than this.
UNDISTORT_TOL = 1e-13
UNDISTORT_MAX_ITER = 100


@dataclass(frozen=True, slots=True)
class RigGeometry:
    """Calibration as contiguous float64 arrays for the kernels. C cameras.

    Attributes:
        camera_names: (C,) names, the order of the first axis of every array.
        matrix: (C, 3, 3) intrinsic matrices K (skew in [0, 1] honoured).
        matrix_inv: (C, 3, 3) K^-1.
        dist: (C, 5) k1, k2, p1, p2, k3.
        extrinsic: (C, 3, 4) [R | t] world -> camera, t in mm.
    """

    camera_names: tuple[str, ...]
    matrix: np.ndarray
    matrix_inv: np.ndarray
    dist: np.ndarray
    extrinsic: np.ndarray

    @classmethod
    def from_calibration(cls, calibration: Calibration) -> RigGeometry:
        cams = calibration.cameras
        if len(cams) < 2:
            raise ValueError(f"triangulation needs at least 2 cameras, calibration has {len(cams)}")
        matrix = np.ascontiguousarray(np.stack([np.asarray(c.matrix, np.float64) for c in cams]))
        dist = np.zeros((len(cams), 5))
        for i, c in enumerate(cams):
            d = np.asarray(c.dist, np.float64).ravel()
            if d.size > 5 and np.any(d[5:] != 0):
                raise ValueError(f"camera {c.name!r}: only 5 distortion terms are supported, got {d.tolist()}")
            dist[i, : min(5, d.size)] = d[:5]
        extrinsic = np.ascontiguousarray(np.stack([c.extrinsic for c in cams]))
        return cls(
            camera_names=tuple(c.name for c in cams),
            matrix=matrix,
            matrix_inv=np.ascontiguousarray(np.linalg.inv(matrix)),
            dist=dist,
            extrinsic=extrinsic,
        )

    @property
    def n_cameras(self) -> int:
        return len(self.camera_names)


@dataclass(frozen=True, slots=True)
class TriangulationOptions:
    """Tuning of `triangulate`.

    Attributes:
        min_likelihood: views whose 2D likelihood is below this are not used (Anipose's
            score_threshold).
        weighted: scale each view's DLT rows by its likelihood; False gives the plain DLT.
        outlier_threshold_px: with 3 or more views whose worst reprojection error is above this,
            the views are replaced by a subset (of at least 2): with at most `exhaustive_max_views`
            views, the largest subset whose every view is within this threshold (lowest mean error
            among equals; if none is, the one with the smallest worst-view error); with more views,
            greedily the leave-one-out subset with the lowest mean error while the worst view is
            above the threshold. ``inf`` switches rejection off.
        exhaustive_max_views: the exhaustive subset search is used up to this many usable views
            (2^n - n - 1 subsets: 11 for 4 views, 57 for 6); 0 always uses the greedy search.
        prior_ambiguity_mm: with a prior (see `triangulate`), when the best-fitting subset and the
            equally large passing subset nearest the prior give points further apart than this,
            the latter wins (a left/right swap in two of four views: both pairs fit).
        max_reprojection_error_px: a keypoint whose final mean reprojection error exceeds this is
            reported as NaN (``inf``: never).
        undistort_max_iter: fixed-point iterations of the undistortion at most.
        undistort_tol: stop iterating when a step moves the normalised point less than this (0:
            always run `undistort_max_iter` iterations, which with 5 is exactly cv2.undistortPoints).
    """

    min_likelihood: float = 0.5
    weighted: bool = True
    outlier_threshold_px: float = 15.0
    max_reprojection_error_px: float = math.inf
    exhaustive_max_views: int = 6
    prior_ambiguity_mm: float = 30.0
    undistort_max_iter: int = UNDISTORT_MAX_ITER
    undistort_tol: float = UNDISTORT_TOL


#: the plain linear case: every finite view, unweighted, no rejection.
LINEAR = TriangulationOptions(min_likelihood=-math.inf, weighted=False, outlier_threshold_px=math.inf)


@dataclass(frozen=True, slots=True)
class TriangulationResult:
    """N keypoints triangulated from C views.

    Attributes:
        points_mm: (N, 3) world points, mm; NaN where fewer than 2 usable views.
        reprojection_error_px: (N,) mean reprojection error over the views used, px (NaN if none).
        n_cameras: (N,) int, views used (0 where not triangulated).
        score: (N,) smallest likelihood among the views used (NaN where not triangulated).
        views_used: (C, N) bool, which view contributed to each keypoint.
    """

    points_mm: np.ndarray
    reprojection_error_px: np.ndarray
    n_cameras: np.ndarray
    score: np.ndarray
    views_used: np.ndarray

    def to_anipose_columns(self, keypoint_names: Sequence[str]) -> dict[str, np.ndarray]:
        """Anipose pose-3d CSV columns for one row per call: {kp}_x/_y/_z/_error/_ncams/_score."""
        if len(keypoint_names) != len(self.points_mm):
            raise ValueError(f"{len(keypoint_names)} keypoint names for {len(self.points_mm)} points")
        out: dict[str, np.ndarray] = {}
        for i, kp in enumerate(keypoint_names):
            out[f"{kp}_x"] = self.points_mm[i, 0]
            out[f"{kp}_y"] = self.points_mm[i, 1]
            out[f"{kp}_z"] = self.points_mm[i, 2]
            out[f"{kp}_error"] = self.reprojection_error_px[i]
            out[f"{kp}_ncams"] = self.n_cameras[i]
            out[f"{kp}_score"] = self.score[i]
        return out


# ----------------------------------------------------------------------------------------------
# kernels


@njit(cache=True, error_model="numpy")
def _undistort_point(kinv, dist, u, v, max_iter, tol):  # pragma: no cover - compiled
    x0 = kinv[0, 0] * u + kinv[0, 1] * v + kinv[0, 2]
    y0 = kinv[1, 0] * u + kinv[1, 1] * v + kinv[1, 2]
    w = kinv[2, 0] * u + kinv[2, 1] * v + kinv[2, 2]
    x0 /= w
    y0 /= w
    k1 = dist[0]
    k2 = dist[1]
    p1 = dist[2]
    p2 = dist[3]
    k3 = dist[4]
    x = x0
    y = y0
    for _ in range(max_iter):
        r2 = x * x + y * y
        icdist = 1.0 / (1.0 + ((k3 * r2 + k2) * r2 + k1) * r2)
        if icdist < 0.0:
            # outside the region where the distortion is invertible; OpenCV gives up the same way
            return x0, y0
        dx = 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
        dy = p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
        xn = (x0 - dx) * icdist
        yn = (y0 - dy) * icdist
        step = abs(xn - x) + abs(yn - y)
        x = xn
        y = yn
        if step < tol:
            break
    return x, y


@njit(cache=True, error_model="numpy")
def _project_point(kmat, dist, ext, X, Y, Z):  # pragma: no cover - compiled
    """World point -> (u, v, depth) in px; depth <= 0 means behind the camera."""
    xc = ext[0, 0] * X + ext[0, 1] * Y + ext[0, 2] * Z + ext[0, 3]
    yc = ext[1, 0] * X + ext[1, 1] * Y + ext[1, 2] * Z + ext[1, 3]
    zc = ext[2, 0] * X + ext[2, 1] * Y + ext[2, 2] * Z + ext[2, 3]
    x = xc / zc
    y = yc / zc
    r2 = x * x + y * y
    radial = 1.0 + ((dist[4] * r2 + dist[1]) * r2 + dist[0]) * r2
    xd = x * radial + 2.0 * dist[2] * x * y + dist[3] * (r2 + 2.0 * x * x)
    yd = y * radial + dist[2] * (r2 + 2.0 * y * y) + 2.0 * dist[3] * x * y
    u = kmat[0, 0] * xd + kmat[0, 1] * yd + kmat[0, 2]
    v = kmat[1, 1] * yd + kmat[1, 2]
    return u, v, zc


@njit(cache=True, error_model="numpy")
def _dlt(rays, ext, weight, use, A, V, out):  # pragma: no cover - compiled
    """Weighted DLT of one point from the views with use[c]; writes out[0:3]. Returns success.

    rays (C, 2) normalised coordinates; ext (C, 3, 4); weight (C,); A (2C, 4) and V (4, 4) scratch.
    """
    m = 0
    n_cams = rays.shape[0]
    for c in range(n_cams):
        if not use[c]:
            continue
        w = weight[c]
        for j in range(4):
            A[m, j] = w * (rays[c, 0] * ext[c, 2, j] - ext[c, 0, j])
            A[m + 1, j] = w * (rays[c, 1] * ext[c, 2, j] - ext[c, 1, j])
        m += 2
    if m < 4:
        return False
    for i in range(4):
        for j in range(4):
            V[i, j] = 1.0 if i == j else 0.0
    # one-sided Jacobi: rotate column pairs of A until all are orthogonal; V accumulates them
    for _sweep in range(60):
        rotated = False
        for p in range(3):
            for q in range(p + 1, 4):
                alpha = 0.0
                beta = 0.0
                gamma = 0.0
                for i in range(m):
                    alpha += A[i, p] * A[i, p]
                    beta += A[i, q] * A[i, q]
                    gamma += A[i, p] * A[i, q]
                if gamma == 0.0 or abs(gamma) <= 1e-15 * math.sqrt(alpha * beta):
                    continue
                rotated = True
                zeta = (beta - alpha) / (2.0 * gamma)
                t = 1.0 / (abs(zeta) + math.sqrt(1.0 + zeta * zeta))
                if zeta < 0.0:
                    t = -t
                cs = 1.0 / math.sqrt(1.0 + t * t)
                sn = cs * t
                for i in range(m):
                    ap = A[i, p]
                    aq = A[i, q]
                    A[i, p] = cs * ap - sn * aq
                    A[i, q] = sn * ap + cs * aq
                for i in range(4):
                    vp = V[i, p]
                    vq = V[i, q]
                    V[i, p] = cs * vp - sn * vq
                    V[i, q] = sn * vp + cs * vq
        if not rotated:
            break
    best = 0
    best_norm = math.inf
    for j in range(4):
        s = 0.0
        for i in range(m):
            s += A[i, j] * A[i, j]
        if s < best_norm:
            best_norm = s
            best = j
    h = V[3, best]
    if h == 0.0 or not math.isfinite(h):
        return False
    out[0] = V[0, best] / h
    out[1] = V[1, best] / h
    out[2] = V[2, best] / h
    return True


@njit(cache=True, error_model="numpy")
def _view_errors(kmat, dist, ext, points_px, n, X, use, err):  # pragma: no cover - compiled
    """Reprojection error (px) of X in each used view into err[c]; returns the mean. inf if behind."""
    total = 0.0
    count = 0
    for c in range(kmat.shape[0]):
        if not use[c]:
            err[c] = math.nan
            continue
        u, v, depth = _project_point(kmat[c], dist[c], ext[c], X[0], X[1], X[2])
        if depth <= 0.0:
            err[c] = math.inf
        else:
            du = u - points_px[c, n, 0]
            dv = v - points_px[c, n, 1]
            err[c] = math.sqrt(du * du + dv * dv)
        total += err[c]
        count += 1
    if count == 0:
        return math.nan
    return total / count


@njit(cache=True, error_model="numpy")
def _worst(err, use):  # pragma: no cover - compiled
    """Largest err[c] over the views with use[c] (0 if none)."""
    worst = 0.0
    for c in range(err.shape[0]):
        if use[c] and err[c] > worst:
            worst = err[c]
    return worst


@njit(cache=True, error_model="numpy")
def undistort_kernel(kinv, dist, points_px, max_iter, tol, out):  # pragma: no cover - compiled
    """(C, N, 2) px -> out (C, N, 2) normalised coordinates; NaN stays NaN."""
    for c in range(points_px.shape[0]):
        for n in range(points_px.shape[1]):
            u = points_px[c, n, 0]
            v = points_px[c, n, 1]
            if math.isfinite(u) and math.isfinite(v):
                x, y = _undistort_point(kinv[c], dist[c], u, v, max_iter, tol)
                out[c, n, 0] = x
                out[c, n, 1] = y
            else:
                out[c, n, 0] = math.nan
                out[c, n, 1] = math.nan


@njit(cache=True, error_model="numpy")
def triangulate_kernel(
    kmat, kinv, dist, ext, points_px, likelihood, min_likelihood, weighted, outlier_px, max_error_px,
    exhaustive_max, prior, prior_ambiguity_mm, max_iter, tol, out_xyz, out_err, out_ncams, out_score, out_used,
):  # pragma: no cover - compiled
    """The batched kernel behind `triangulate`; see there. Writes into the out_* arrays."""
    n_cams = points_px.shape[0]
    n_pts = points_px.shape[1]
    rays = np.empty((n_cams, 2))
    weight = np.empty(n_cams)
    use = np.zeros(n_cams, np.bool_)
    trial = np.zeros(n_cams, np.bool_)
    best_use = np.zeros(n_cams, np.bool_)
    prior_use = np.zeros(n_cams, np.bool_)
    prior_X = np.empty(3)
    slot = np.empty(n_cams, np.int64)
    err = np.empty(n_cams)
    A = np.empty((2 * n_cams, 4))
    V = np.empty((4, 4))
    X = np.empty(3)
    Xt = np.empty(3)
    best_X = np.empty(3)
    for n in range(n_pts):
        m = 0
        for c in range(n_cams):
            u = points_px[c, n, 0]
            v = points_px[c, n, 1]
            p = likelihood[c, n]
            ok = math.isfinite(u) and math.isfinite(v) and math.isfinite(p) and p >= min_likelihood
            use[c] = ok
            if ok:
                x, y = _undistort_point(kinv[c], dist[c], u, v, max_iter, tol)
                rays[c, 0] = x
                rays[c, 1] = y
                weight[c] = p if weighted else 1.0
                m += 1
        for k in range(3):
            out_xyz[n, k] = math.nan
        out_err[n] = math.nan
        out_ncams[n] = 0
        out_score[n] = math.nan
        for c in range(n_cams):
            out_used[c, n] = False
        if m < 2 or not _dlt(rays, ext, weight, use, A, V, X):
            continue
        mean_err = _view_errors(kmat, dist, ext, points_px, n, X, use, err)
        if m >= 3 and m <= exhaustive_max and _worst(err, use) > outlier_px:
            # exhaustive search over the camera subsets of the usable views (11 for 4 views): the
            # largest subset whose every view reprojects within outlier_px, among equals the lowest
            # mean error -- unless the equal subset nearest the prior (the tracker's prediction) is a
            # different point (> prior_ambiguity_mm away), then that one; if no subset passes, the
            # one with the smallest worst-view error. Greedy
            # leave-one-out cannot separate two bad views (e.g. two cameras guessing an occluded paw),
            # and with a left/right swap in two of four views both pairs fit equally well: only the
            # prior can tell the paw from its twin.
            has_prior = math.isfinite(prior[n, 0]) and math.isfinite(prior[n, 1]) and math.isfinite(prior[n, 2])
            best_dist = math.inf
            prior_found = False
            prior_size = 0
            n_sub = 0
            for c in range(n_cams):
                if use[c]:
                    slot[n_sub] = c
                    n_sub += 1
            best_pass = False
            best_size = 0
            best_err = math.inf
            best_worst = math.inf
            for mask in range(1, 1 << n_sub):
                size = 0
                for b in range(n_sub):
                    if (mask >> b) & 1:
                        size += 1
                if size < 2:
                    continue
                for c in range(n_cams):
                    trial[c] = False
                for b in range(n_sub):
                    if (mask >> b) & 1:
                        trial[slot[b]] = True
                if size == m:
                    for k in range(3):
                        Xt[k] = X[k]
                elif not _dlt(rays, ext, weight, trial, A, V, Xt):
                    continue
                e = _view_errors(kmat, dist, ext, points_px, n, Xt, trial, err)
                w = _worst(err, trial)
                passed = w <= outlier_px
                if passed:
                    better = (not best_pass) or size > best_size or (size == best_size and e < best_err)
                    if has_prior and (size > prior_size or not prior_found):
                        prior_found = False  # a larger passing subset supersedes the smaller ones
                        prior_size = size
                        best_dist = math.inf
                    if has_prior and size == prior_size:
                        d = math.sqrt((Xt[0] - prior[n, 0]) ** 2 + (Xt[1] - prior[n, 1]) ** 2
                                      + (Xt[2] - prior[n, 2]) ** 2)
                        if d < best_dist:
                            best_dist = d
                            prior_found = True
                            for c in range(n_cams):
                                prior_use[c] = trial[c]
                            for k in range(3):
                                prior_X[k] = Xt[k]
                else:
                    better = (not best_pass) and w < best_worst
                if better:
                    best_pass = passed
                    best_size = size
                    best_err = e
                    best_worst = w
                    for c in range(n_cams):
                        best_use[c] = trial[c]
                    for k in range(3):
                        best_X[k] = Xt[k]
            if best_pass and prior_found and prior_size == best_size:
                # two different points fit equally well (a swap): take the one continuing the track
                sep = math.sqrt((prior_X[0] - best_X[0]) ** 2 + (prior_X[1] - best_X[1]) ** 2
                                + (prior_X[2] - best_X[2]) ** 2)
                if sep > prior_ambiguity_mm:
                    for c in range(n_cams):
                        best_use[c] = prior_use[c]
                    for k in range(3):
                        best_X[k] = prior_X[k]
            for c in range(n_cams):
                use[c] = best_use[c]
            for k in range(3):
                X[k] = best_X[k]
            m = best_size
            mean_err = _view_errors(kmat, dist, ext, points_px, n, X, use, err)
        # greedy rejection for rigs with more views than the exhaustive search takes: drop the view
        # whose removal fits best, while the worst view is above the threshold
        while m >= 3:
            worst = _worst(err, use)
            if not worst > outlier_px:
                break
            best_err = math.inf
            for drop in range(n_cams):
                if not use[drop]:
                    continue
                for c in range(n_cams):
                    trial[c] = use[c] and c != drop
                if not _dlt(rays, ext, weight, trial, A, V, Xt):
                    continue
                e = _view_errors(kmat, dist, ext, points_px, n, Xt, trial, err)
                if e < best_err:
                    best_err = e
                    for c in range(n_cams):
                        best_use[c] = trial[c]
                    for k in range(3):
                        best_X[k] = Xt[k]
            if not best_err < mean_err:
                _view_errors(kmat, dist, ext, points_px, n, X, use, err)
                break
            for c in range(n_cams):
                use[c] = best_use[c]
            for k in range(3):
                X[k] = best_X[k]
            m -= 1
            mean_err = _view_errors(kmat, dist, ext, points_px, n, X, use, err)
        if not mean_err <= max_error_px:
            continue
        score = math.inf
        for c in range(n_cams):
            if use[c]:
                out_used[c, n] = True
                if likelihood[c, n] < score:
                    score = likelihood[c, n]
        for k in range(3):
            out_xyz[n, k] = X[k]
        out_err[n] = mean_err
        out_ncams[n] = m
        out_score[n] = score


@njit(cache=True, error_model="numpy")
def project_kernel(kmat, dist, ext, points_mm, out):  # pragma: no cover - compiled
    """(N, 3) world mm -> out (C, N, 2) px; NaN for non-finite points or points behind a camera."""
    for c in range(kmat.shape[0]):
        for n in range(points_mm.shape[0]):
            X = points_mm[n, 0]
            Y = points_mm[n, 1]
            Z = points_mm[n, 2]
            u, v, depth = _project_point(kmat[c], dist[c], ext[c], X, Y, Z)
            if depth > 0.0 and math.isfinite(u) and math.isfinite(v):
                out[c, n, 0] = u
                out[c, n, 1] = v
            else:
                out[c, n, 0] = math.nan
                out[c, n, 1] = math.nan


# ----------------------------------------------------------------------------------------------
# public functions


def _as_points(rig: RigGeometry, points_px: np.ndarray) -> np.ndarray:
    pts = np.ascontiguousarray(points_px, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[0] != rig.n_cameras or pts.shape[2] != 2:
        raise ValueError(f"points_px: expected shape ({rig.n_cameras}, N, 2), got {pts.shape}")
    return pts


def triangulate(
    rig: RigGeometry,
    points_px: np.ndarray,
    likelihood: np.ndarray | None = None,
    options: TriangulationOptions = TriangulationOptions(),
    prior_mm: np.ndarray | None = None,
) -> TriangulationResult:
    """(C, N, 2) distorted image points, px (+ (C, N) likelihood) -> N world points, mm.

    NaN in `points_px` means "not seen in this view". A keypoint needs at least 2 usable views
    (finite, likelihood >= options.min_likelihood); otherwise its row is NaN.

    Args:
        rig: `RigGeometry.from_calibration(calibration)`, cameras in the order of axis 0.
        points_px: (C, N, 2) image points as the 2D model reports them (distorted pixels).
        likelihood: (C, N) 2D likelihoods in [0, 1]; None means 1 for every finite point.
        options: weighting, outlier rejection and undistortion settings.
        prior_mm: (N, 3) expected positions, mm (e.g. the Kalman prediction; NaN rows = none): when
            outlier rejection leaves equally large camera subsets that all fit but give different
            points (further apart than options.prior_ambiguity_mm), the one nearest the prior wins
            instead of the one with the lowest reprojection error.
    """
    pts = _as_points(rig, points_px)
    n_cams, n_pts, _ = pts.shape
    if likelihood is None:
        like = np.ones((n_cams, n_pts))
    else:
        like = np.ascontiguousarray(likelihood, dtype=np.float64)
        if like.shape != (n_cams, n_pts):
            raise ValueError(f"likelihood: expected shape ({n_cams}, {n_pts}), got {like.shape}")
    xyz = np.empty((n_pts, 3))
    err = np.empty(n_pts)
    ncams = np.empty(n_pts, np.int64)
    score = np.empty(n_pts)
    used = np.empty((n_cams, n_pts), np.bool_)
    if prior_mm is None:
        prior = np.full((n_pts, 3), np.nan)
    else:
        prior = np.ascontiguousarray(prior_mm, dtype=np.float64)
        if prior.shape != (n_pts, 3):
            raise ValueError(f"prior_mm: expected shape ({n_pts}, 3), got {prior.shape}")
    triangulate_kernel(
        rig.matrix, rig.matrix_inv, rig.dist, rig.extrinsic, pts, like,
        float(options.min_likelihood), bool(options.weighted), float(options.outlier_threshold_px),
        float(options.max_reprojection_error_px), int(options.exhaustive_max_views), prior,
        float(options.prior_ambiguity_mm), int(options.undistort_max_iter), float(options.undistort_tol),
        xyz, err, ncams, score, used,
    )
    return TriangulationResult(xyz, err, ncams, score, used)


def triangulate_linear(
    rig: RigGeometry, points_px: np.ndarray, undistort_max_iter: int = UNDISTORT_MAX_ITER,
    undistort_tol: float = UNDISTORT_TOL,
) -> np.ndarray:
    """(C, N, 2) image points, px -> (N, 3) world points, mm: the plain case (every finite view,
    unweighted DLT, no rejection) -- what aniposelib's ``CameraGroup.triangulate`` computes."""
    options = TriangulationOptions(
        min_likelihood=-math.inf, weighted=False, outlier_threshold_px=math.inf,
        undistort_max_iter=undistort_max_iter, undistort_tol=undistort_tol,
    )
    return triangulate(rig, points_px, None, options).points_mm


def undistort(
    rig: RigGeometry, points_px: np.ndarray, max_iter: int = UNDISTORT_MAX_ITER, tol: float = UNDISTORT_TOL
) -> np.ndarray:
    """(C, N, 2) distorted image points, px -> (C, N, 2) normalised coordinates (x/z, y/z)."""
    pts = _as_points(rig, points_px)
    out = np.empty_like(pts)
    undistort_kernel(rig.matrix_inv, rig.dist, pts, int(max_iter), float(tol), out)
    return out


def project(rig: RigGeometry, points_mm: np.ndarray) -> np.ndarray:
    """(N, 3) world points, mm -> (C, N, 2) distorted image points, px (skew honoured)."""
    pts = np.ascontiguousarray(points_mm, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points_mm: expected shape (N, 3), got {pts.shape}")
    out = np.empty((rig.n_cameras, len(pts), 2))
    project_kernel(rig.matrix, rig.dist, rig.extrinsic, pts, out)
    return out
