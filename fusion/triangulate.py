"""Online triangulation: undistort, likelihood-weighted linear triangulation (DLT), outlier rejection.

The one triangulation kernel of the project: live fusion, replay, tests and benchmarks all call
`triangulate` (or `triangulate_linear`, the same kernel with weighting and rejection switched off).

Camera model: OpenCV's pinhole with 5-term distortion (k1, k2, p1, p2, k3), plus the skew term
``matrix[0, 1]`` that MATLAB calibrations carry (OpenCV's own projectPoints/undistortPoints ignore
it; with skew 0 the two models are identical). Undistortion inverts the distortion with OpenCV's
fixed-point iteration, but runs it to convergence instead of OpenCV's default 5 iterations.

DLT: for each view the two rows ``x * P[2] - P[0]``, ``y * P[2] - P[1]`` with ``P = [R | t]`` and
(x, y) the undistorted normalised coordinates -- the same system as aniposelib's
``triangulate_simple`` -- each view's rows scaled by its weight (the 2D likelihood); the solution
is the right singular vector of the smallest singular value, i.e. the smallest eigenvector of the
4 x 4 normal matrix ``A^T A``. Each view's share of that matrix is computed once per keypoint, so a
camera subset of the outlier search costs a sum of 4 x 4 blocks and an inverse iteration on it
(an LDL^T factorisation and a few 4 x 4 solves; LDL^T is insensitive to the bad column scaling of
the DLT -- rotation columns ~1, translation column ~1000 mm). Where inverse iteration does not
converge (two nearly equal smallest singular values) a one-sided Jacobi SVD of the rows, written
out in loops, decides. Both are cheap for numba to compile (no LAPACK, no matrix inverse).
Kernels use numba's ``error_model="numpy"``: a degenerate division gives inf/NaN (and a NaN row),
never an exception.

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
            greedily the leave-one-out subset (of `greedy_candidates` tried) with the lowest mean
            error while the worst view is
            above the threshold. ``inf`` switches rejection off.
        exhaustive_max_views: the exhaustive subset search is used up to this many usable views
            (2^n - n - 1 subsets: 11 for 4 views, 57 for 6); 0 always uses the greedy search.
        greedy_candidates: each round of the greedy search tries leaving out only this many views,
            those with the largest reprojection errors (a gross outlier is among them), so a round
            costs the same at 12 views as at 5; 0 tries every view (the search before issue 19).
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
    greedy_candidates: int = 3
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
def _view_normal(rays, ext, weight, c, G):  # pragma: no cover - compiled
    """G[c] = w^2 (r1 r1^T + r2 r2^T), view c's share of the DLT normal matrix A^T A (4 x 4), with
    r1 = x P[2] - P[0] and r2 = y P[2] - P[1] its two DLT rows (P = [R | t], (x, y) its ray)."""
    w = weight[c]
    x = rays[c, 0]
    y = rays[c, 1]
    e = ext[c]
    a0 = w * (x * e[2, 0] - e[0, 0])
    a1 = w * (x * e[2, 1] - e[0, 1])
    a2 = w * (x * e[2, 2] - e[0, 2])
    a3 = w * (x * e[2, 3] - e[0, 3])
    b0 = w * (y * e[2, 0] - e[1, 0])
    b1 = w * (y * e[2, 1] - e[1, 1])
    b2 = w * (y * e[2, 2] - e[1, 2])
    b3 = w * (y * e[2, 3] - e[1, 3])
    g = G[c]
    g[0, 0] = a0 * a0 + b0 * b0
    g[0, 1] = g[1, 0] = a0 * a1 + b0 * b1
    g[0, 2] = g[2, 0] = a0 * a2 + b0 * b2
    g[0, 3] = g[3, 0] = a0 * a3 + b0 * b3
    g[1, 1] = a1 * a1 + b1 * b1
    g[1, 2] = g[2, 1] = a1 * a2 + b1 * b2
    g[1, 3] = g[3, 1] = a1 * a3 + b1 * b3
    g[2, 2] = a2 * a2 + b2 * b2
    g[2, 3] = g[3, 2] = a2 * a3 + b2 * b3
    g[3, 3] = a3 * a3 + b3 * b3


@njit(cache=True, error_model="numpy")
def _null_vector(G, use, M, L, d, v, start):  # pragma: no cover - compiled
    """Smallest eigenvector of M = sum of G[c] over use[c], by inverse iteration; -> converged?

    M (4, 4), L (4, 4), d (4,) and v (4,) are scratch; v holds the unit vector on return. The
    iteration starts from the homogeneous point (start, 1) when start (3,) is finite (a nearby
    solution, e.g. of a camera subset's superset: then one or two steps do), else from (1, 1, 1, 1). M is
    the normal matrix of the DLT: its smallest eigenvector is the right singular vector of the
    smallest singular value of A, the DLT solution. An LDL^T factorisation of the 4 x 4 matrix
    and a few solves (each step shrinks the other components by lambda_4 / lambda_3, tiny for a
    fitting point) replace the SVD; a (near-)singular M, the noise-free case, converges at once.
    """
    for i in range(4):
        for j in range(4):
            M[i, j] = 0.0
    for c in range(G.shape[0]):
        if use[c]:
            for i in range(4):
                for j in range(4):
                    M[i, j] += G[c, i, j]
    scale = 0.0
    for i in range(4):
        if M[i, i] > scale:
            scale = M[i, i]
    if not (scale > 0.0 and math.isfinite(scale)):
        return False
    tiny = 1e-300 + 1e-30 * scale
    # LDL^T (no pivoting: M is symmetric positive semi-definite); a pivot lost to rounding in the
    # null direction is clamped to a tiny positive value, which is what inverse iteration wants
    for j in range(4):
        s = M[j, j]
        for k in range(j):
            s -= L[j, k] * L[j, k] * d[k]
        if s < tiny:
            s = tiny
        d[j] = s
        L[j, j] = 1.0
        for i in range(j + 1, 4):
            s = M[i, j]
            for k in range(j):
                s -= L[i, k] * L[j, k] * d[k]
            L[i, j] = s / d[j]
    if math.isfinite(start[0]) and math.isfinite(start[1]) and math.isfinite(start[2]):
        norm = math.sqrt(start[0] * start[0] + start[1] * start[1] + start[2] * start[2] + 1.0)
        for i in range(3):
            v[i] = start[i] / norm
        v[3] = 1.0 / norm
    else:
        for i in range(4):
            v[i] = 0.5
    prev = math.inf
    for _it in range(100):
        # solve L D L^T y = v in place
        y0 = v[0]
        y1 = v[1] - L[1, 0] * y0
        y2 = v[2] - L[2, 0] * y0 - L[2, 1] * y1
        y3 = v[3] - L[3, 0] * y0 - L[3, 1] * y1 - L[3, 2] * y2
        y0 /= d[0]
        y1 /= d[1]
        y2 /= d[2]
        y3 /= d[3]
        y2 -= L[3, 2] * y3
        y1 -= L[2, 1] * y2 + L[3, 1] * y3
        y0 -= L[1, 0] * y1 + L[2, 0] * y2 + L[3, 0] * y3
        norm = math.sqrt(y0 * y0 + y1 * y1 + y2 * y2 + y3 * y3)
        if not (norm > 0.0 and math.isfinite(norm)):
            return False
        y0 /= norm
        y1 /= norm
        y2 /= norm
        y3 /= norm
        if y0 * v[0] + y1 * v[1] + y2 * v[2] + y3 * v[3] < 0.0:
            y0 = -y0
            y1 = -y1
            y2 = -y2
            y3 = -y3
        change = abs(y0 - v[0]) + abs(y1 - v[1]) + abs(y2 - v[2]) + abs(y3 - v[3])
        v[0] = y0
        v[1] = y1
        v[2] = y2
        v[3] = y3
        if change < 1e-15:
            return True
        if change >= prev:  # stalled at rounding level
            return change < 1e-12
        if math.isfinite(prev):
            # linear convergence at rate r leaves about change * r / (1 - r) to go
            r = change / prev
            if change * r < 1e-16 * (1.0 - r):
                return True
        prev = change
    return False


@njit(cache=True, error_model="numpy")
def _solve(G, rays, ext, weight, use, M, L, d, v, A, V, start, out):  # pragma: no cover - compiled
    """DLT of one point from the views with use[c] (at least 2) into out[0:3]; returns success.

    start (3,): a nearby solution to start the inverse iteration from (NaN: none).

    Inverse iteration on the normal matrix (`_null_vector`); in the rare case it does not converge
    (two nearly equal smallest singular values) the Jacobi SVD of the rows (`_dlt`) decides.
    """
    m = 0
    for c in range(use.shape[0]):
        if use[c]:
            m += 1
    if m < 2:
        return False
    if not _null_vector(G, use, M, L, d, v, start):
        return _dlt(rays, ext, weight, use, A, V, out)
    h = v[3]
    if h == 0.0 or not math.isfinite(h):
        return False
    out[0] = v[0] / h
    out[1] = v[1] / h
    out[2] = v[2] / h
    return True


@njit(cache=True, error_model="numpy")
def _write_result(likelihood, n, use, X, mean_err, m, out_xyz, out_err, out_ncams, out_score, out_used):  # pragma: no cover - compiled
    score = math.inf
    for c in range(use.shape[0]):
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
def _greedy(kmat, dist, ext, points_px, n, G, rays, weight, M, L, dd, vv, A, V, usable, use, X, Xt, best_X,
            best_use, trial, cand, err, err2, m, mean_err, outlier_px, greedy_k):  # pragma: no cover - compiled
    """Greedy rejection of one keypoint's views, in place on use (C,) and X (3,); -> (views, mean error).

    While the worst view (err, up to date for X) is above outlier_px: drop the view whose removal
    fits best; the candidates are the greedy_k views with the largest errors (every view if
    greedy_k <= 0): a gross outlier usually has one of the largest errors, so a round costs the
    same at 12 views as at 5. Then every usable view that agrees with the final point (within
    outlier_px) is taken back if the enlarged set still passes: a view dropped while two bad views
    pulled the fit is restored (the exhaustive search's rule, the largest consistent subset, for
    one more solve). The rest are scratch arrays of `triangulate_kernel`.
    """
    n_cams = use.shape[0]
    dropped = False
    while m >= 3:
        worst = _worst(err, use)
        if not worst > outlier_px:
            break
        if greedy_k <= 0 or greedy_k >= m:
            for c in range(n_cams):
                cand[c] = use[c]
        else:
            for c in range(n_cams):
                cand[c] = False
            for _j in range(greedy_k):
                top = -1
                for c in range(n_cams):
                    if use[c] and not cand[c] and (top < 0 or err[c] > err[top]):
                        top = c
                cand[top] = True
        best_err = math.inf
        for drop in range(n_cams):
            if not cand[drop]:
                continue
            for c in range(n_cams):
                trial[c] = use[c] and c != drop
            if not _solve(G, rays, ext, weight, trial, M, L, dd, vv, A, V, X, Xt):
                continue
            e = _view_errors(kmat, dist, ext, points_px, n, Xt, trial, err2)
            if e < best_err:
                best_err = e
                for c in range(n_cams):
                    best_use[c] = trial[c]
                for k in range(3):
                    best_X[k] = Xt[k]
        if not best_err < mean_err:
            break
        for c in range(n_cams):
            use[c] = best_use[c]
        for k in range(3):
            X[k] = best_X[k]
        m -= 1
        mean_err = _view_errors(kmat, dist, ext, points_px, n, X, use, err)
        dropped = True
    if dropped:
        # a view dropped while two bad views pulled the fit may agree with the final point: take
        # back every usable view within the threshold if the enlarged set still passes (the
        # exhaustive search's rule, the largest consistent subset, at the cost of one solve)
        added = False
        for c in range(n_cams):
            trial[c] = use[c]
            if usable[c] and not use[c]:
                u, v, depth = _project_point(kmat[c], dist[c], ext[c], X[0], X[1], X[2])
                du = u - points_px[c, n, 0]
                dv = v - points_px[c, n, 1]
                if depth > 0.0 and math.sqrt(du * du + dv * dv) <= outlier_px:
                    trial[c] = True
                    added = True
        if added and _solve(G, rays, ext, weight, trial, M, L, dd, vv, A, V, X, Xt):
            _view_errors(kmat, dist, ext, points_px, n, Xt, trial, err2)
            if _worst(err2, trial) <= outlier_px:
                m = 0
                for c in range(n_cams):
                    use[c] = trial[c]
                    if use[c]:
                        m += 1
                for k in range(3):
                    X[k] = Xt[k]
                mean_err = _view_errors(kmat, dist, ext, points_px, n, X, use, err)
    return m, mean_err


@njit(cache=True, error_model="numpy")
def triangulate_kernel(
    kmat, kinv, dist, ext, points_px, likelihood, min_likelihood, weighted, outlier_px, max_error_px,
    exhaustive_max, greedy_k, prior, prior_ambiguity_mm, max_iter, tol, out_xyz, out_err, out_ncams, out_score,
    out_used, prior_xyz, prior_err, prior_ncams, prior_score, prior_used,
):  # pragma: no cover - compiled
    """The batched kernel behind `triangulate`; see there. Writes into the out_* arrays.

    out_* receive the triangulation of the frame set alone (the prior ignored); prior_* the one
    with the prior's say in an ambiguous subset choice (a copy of out_* where it had none). One
    pass computes both: undistortion, the per-view normal matrices and the subset search are shared.
    """
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
    err2 = np.empty(n_cams)
    cand = np.zeros(n_cams, np.bool_)
    usable = np.zeros(n_cams, np.bool_)
    use0 = np.zeros(n_cams, np.bool_)
    X0 = np.empty(3)
    G = np.empty((n_cams, 4, 4))
    M = np.empty((4, 4))
    L = np.empty((4, 4))
    dd = np.empty(4)
    vv = np.empty(4)
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
                _view_normal(rays, ext, weight, c, G)
                m += 1
        for k in range(3):
            out_xyz[n, k] = math.nan
            prior_xyz[n, k] = math.nan
        out_err[n] = math.nan
        out_ncams[n] = 0
        out_score[n] = math.nan
        prior_err[n] = math.nan
        prior_ncams[n] = 0
        prior_score[n] = math.nan
        for c in range(n_cams):
            out_used[c, n] = False
            prior_used[c, n] = False
        for k in range(3):
            X[k] = math.nan
        if m < 2 or not _solve(G, rays, ext, weight, use, M, L, dd, vv, A, V, X, X):
            continue
        mean_err = _view_errors(kmat, dist, ext, points_px, n, X, use, err)
        swapped = False  # the prior picked another subset than the best-fitting one
        for c in range(n_cams):
            usable[c] = use[c]
        if m >= 3 and m <= exhaustive_max and _worst(err, use) > outlier_px:
            # exhaustive search over the camera subsets of the usable views (up to 11 for 4 views): the
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
            # the full set failed; it stays the fallback if no subset has a smaller worst error
            best_pass = False
            best_size = m
            best_err = mean_err
            best_worst = _worst(err, use)
            for c in range(n_cams):
                best_use[c] = use[c]
            for k in range(3):
                best_X[k] = X[k]
            # subsets from the largest down (in mask order within a size): once a size has a
            # passing subset, no smaller one can win, so one bad view among m costs m subsets, not
            # 2^m; the choice is the same as enumerating every subset
            size = m
            while size > 2 and not best_pass:
                size -= 1
                for mask in range(3, 1 << n_sub):
                    bits = 0
                    for b in range(n_sub):
                        if (mask >> b) & 1:
                            bits += 1
                    if bits != size:
                        continue
                    for c in range(n_cams):
                        trial[c] = False
                    for b in range(n_sub):
                        if (mask >> b) & 1:
                            trial[slot[b]] = True
                    if not _solve(G, rays, ext, weight, trial, M, L, dd, vv, A, V, X, Xt):
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
                swapped = sep > prior_ambiguity_mm
            for c in range(n_cams):
                use[c] = best_use[c]
            for k in range(3):
                X[k] = best_X[k]
            m = best_size
            mean_err = _view_errors(kmat, dist, ext, points_px, n, X, use, err)
        # greedy rejection for rigs with more views than the exhaustive search takes (see
        # `_greedy`), first trying only the greedy_k worst views per round; if that leaves a set
        # that still fails, or drops more than half the views (leverage: a bad view that pulls the
        # fit to itself looks good, and good views look bad), the search trying every view decides
        if m >= 3 and _worst(err, use) > outlier_px:
            m0 = m
            mean0 = mean_err
            for c in range(n_cams):
                use0[c] = use[c]
            for k in range(3):
                X0[k] = X[k]
            m, mean_err = _greedy(kmat, dist, ext, points_px, n, G, rays, weight, M, L, dd, vv, A, V, usable,
                                  use, X, Xt, best_X, best_use, trial, cand, err, err2, m, mean_err, outlier_px,
                                  greedy_k)
            if greedy_k > 0 and greedy_k < m0 and (_worst(err, use) > outlier_px or 2 * m < m0):
                for c in range(n_cams):
                    use[c] = use0[c]
                for k in range(3):
                    X[k] = X0[k]
                mean_err = _view_errors(kmat, dist, ext, points_px, n, X, use, err)
                m, mean_err = _greedy(kmat, dist, ext, points_px, n, G, rays, weight, M, L, dd, vv, A, V, usable,
                                      use, X, Xt, best_X, best_use, trial, cand, err, err2, m0, mean0, outlier_px, 0)
        if mean_err <= max_error_px:
            _write_result(likelihood, n, use, X, mean_err, m, out_xyz, out_err, out_ncams, out_score, out_used)
        if swapped:
            # the prior's subset passed the exhaustive search, so the greedy stage leaves it alone
            pm = 0
            for c in range(n_cams):
                if prior_use[c]:
                    pm += 1
            pe = _view_errors(kmat, dist, ext, points_px, n, prior_X, prior_use, err)
            if pe <= max_error_px:
                _write_result(likelihood, n, prior_use, prior_X, pe, pm, prior_xyz, prior_err, prior_ncams,
                              prior_score, prior_used)
        else:
            for k in range(3):
                prior_xyz[n, k] = out_xyz[n, k]
            prior_err[n] = out_err[n]
            prior_ncams[n] = out_ncams[n]
            prior_score[n] = out_score[n]
            for c in range(n_cams):
                prior_used[c, n] = out_used[c, n]


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


def _empty_result(n_cams: int, n_pts: int) -> tuple[np.ndarray, ...]:
    return (np.empty((n_pts, 3)), np.empty(n_pts), np.empty(n_pts, np.int64), np.empty(n_pts),
            np.empty((n_cams, n_pts), np.bool_))


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
    raw, tracked = triangulate_tracked(rig, points_px, likelihood, options, prior_mm)
    return raw if prior_mm is None else tracked


def triangulate_tracked(
    rig: RigGeometry,
    points_px: np.ndarray,
    likelihood: np.ndarray | None = None,
    options: TriangulationOptions = TriangulationOptions(),
    prior_mm: np.ndarray | None = None,
) -> tuple[TriangulationResult, TriangulationResult]:
    """`triangulate` without and with the prior in one pass -> (raw, tracked).

    `raw` is ``triangulate(rig, points_px, likelihood, options)`` (a function of this frame set
    alone), `tracked` is ``triangulate(..., prior_mm=prior_mm)``; they differ only for keypoints
    where the prior picked another of two equally good camera subsets. The fusion pipeline needs
    both; one call shares the undistortion, the DLT normal matrices and the subset search.
    Arguments as `triangulate`; ``prior_mm=None`` gives two equal results (the same arrays).
    """
    pts = _as_points(rig, points_px)
    n_cams, n_pts, _ = pts.shape
    if likelihood is None:
        like = np.ones((n_cams, n_pts))
    else:
        like = np.ascontiguousarray(likelihood, dtype=np.float64)
        if like.shape != (n_cams, n_pts):
            raise ValueError(f"likelihood: expected shape ({n_cams}, {n_pts}), got {like.shape}")
    if prior_mm is None:
        prior = np.full((n_pts, 3), np.nan)
    else:
        prior = np.ascontiguousarray(prior_mm, dtype=np.float64)
        if prior.shape != (n_pts, 3):
            raise ValueError(f"prior_mm: expected shape ({n_pts}, 3), got {prior.shape}")
    raw = _empty_result(n_cams, n_pts)
    # without a prior both results are the same: the kernel's copy into the second is a no-op
    tracked = raw if prior_mm is None else _empty_result(n_cams, n_pts)
    triangulate_kernel(
        rig.matrix, rig.matrix_inv, rig.dist, rig.extrinsic, pts, like,
        float(options.min_likelihood), bool(options.weighted), float(options.outlier_threshold_px),
        float(options.max_reprojection_error_px), int(options.exhaustive_max_views),
        int(options.greedy_candidates), prior, float(options.prior_ambiguity_mm), int(options.undistort_max_iter),
        float(options.undistort_tol), *raw, *tracked,
    )
    result = TriangulationResult(*raw)
    return result, (result if prior_mm is None else TriangulationResult(*tracked))


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
