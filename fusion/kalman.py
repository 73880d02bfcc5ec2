"""Per-keypoint 3D Kalman filter: decaying velocity, gating with restart, coasting, forward prediction.

Model, per keypoint and per axis (x, y and z are filtered independently, which keeps every step
closed-form 2x2 algebra that numba compiles in about a second): state (position mm, velocity mm/s).
The velocity is an Ornstein-Uhlenbeck process with time constant tau = `velocity_time_constant_s`,

    x' = v,   v' = -v / tau + w,   w white with density accel_noise_mm_s2**2 * tau

(stationary speed spread accel * tau / sqrt(2) per axis: 700 mm/s for 1e4 mm/s^2 and 100 ms),
discretised exactly over each frame-set interval dt. With tau = inf it is the constant-velocity
model with piecewise-constant white acceleration of standard deviation `accel_noise_mm_s2`.

Why not constant velocity: a landing paw decelerates at ~1e4 mm/s^2, and with that much process
noise at 5-15 frame sets per second the constant-velocity filter's gains tend to alpha = 1,
beta = 2 -- the edge of stability: every measurement error e turns into a velocity of about 2e/dt
of alternating sign (seen as +-1.3 m/s on a planted paw), and any prediction (coasting, the gate,
forward prediction) extrapolates that. With the velocity decaying over tau the velocity estimate
only carries what recent measurements support, and for dt >> tau the filter degrades gracefully
towards a position random walk instead of a noisy differentiator.

Measurement noise follows the triangulation's quality: with reprojection error e (px), score s
(the smallest 2D likelihood of the views used) and n views,

    R = (measurement_sigma_mm**2 + (mm_per_px * e)**2) / max(s, min_score) * f(n)   [mm^2]

with f(2) = `two_view_noise_factor`, f(n >= 3) = 1: a keypoint seen with a large reprojection error,
a low likelihood or by only two views (no redundancy, so a left/right swap or a wrong detection in
one of them still gives a small reprojection error) moves the estimate less.

Gating: a measurement whose Mahalanobis distance to the prediction (3 degrees of freedom) exceeds
`gate_sigma` is rejected and the keypoint coasts. Rejected measurements that agree with each other
(each within `gate_sigma` of the previous one as a track freshly started there -- zero velocity,
`initial_speed_sigma_mm_s` -- would see it) count up; after `reinit_after_rejections` of them in a row the track restarts at the latest (the
animal really moved, or the track was wrong), so the gate never locks a keypoint out for good. A
rejected measurement that disagrees with the previous one starts the count again at 1.

Velocity: the speed is clamped to `max_speed_mm_s` after every update. Without the clamp, one
accepted wrong measurement after a gap (innovation y over dt gives a velocity gain of about 2/dt at
low frame rates) produced speeds of metres per second, and the coasting prediction that followed
ran hundreds of millimetres away from every measurement (which the gate then rejected) until
`max_coast_s` ran out.

Coasting: without an accepted measurement the state is predicted forward and its variance grows
(with the velocity decaying over tau, the drift of a coasted keypoint is at most speed x tau).
After `max_coast_s` without an accepted measurement the keypoint is reported as NaN until the
next measurement.

Forward prediction: `step(..., predict_ahead_s=L)` also returns the state extrapolated L seconds
ahead with the same motion model (position + velocity * tau * (1 - exp(-L / tau)); velocity * L
for tau = inf), the 3D analogue of DLC-Live's forward predictor: with L set to the
pipeline's latency it estimates where the keypoint is *now* rather than at capture time.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

#: status codes returned per keypoint by `KalmanFilter3D.step`
NO_TRACK = 0  # no estimate (never seen, or coasted longer than max_coast_s): NaN
UPDATED = 1  # measurement accepted
COASTING = 2  # no measurement this frame set; prediction only
GATED = 3  # measurement rejected by the gate; prediction only
STARTED = 4  # track (re)started at this measurement


@dataclass(frozen=True, slots=True)
class KalmanOptions:
    """Tuning of `KalmanFilter3D`; see the module docstring for the model.

    Attributes:
        accel_noise_mm_s2: standard deviation of the white acceleration (process noise), mm/s^2.
        measurement_sigma_mm: measurement noise floor, mm (a 2D model with 2-3 px median error
            triangulates to 3-4 mm median on a 4-camera rig at ~0.8 m).
        mm_per_px: converts reprojection error (px) into measurement noise (mm); about the size of
            one pixel at the working distance (1.3 mm for 600 px focal length at 0.77 m).
        min_score: lower bound of the score in the noise formula (keeps R finite).
        initial_speed_sigma_mm_s: velocity uncertainty when a track starts, mm/s.
        gate_sigma: Mahalanobis gate; inf switches gating off.
        reinit_after_rejections: consecutive mutually consistent gated measurements that restart
            the track.
        max_coast_s: seconds without an accepted measurement before the keypoint is given up (NaN).
        max_speed_mm_s: the velocity estimate is clamped to this speed (a rat's paw in swing moves
            at about 1 m/s); inf switches the clamp off.
        two_view_noise_factor: measurement noise multiplier for keypoints triangulated from two
            views only (>= 1).
        velocity_time_constant_s: tau of the Ornstein-Uhlenbeck velocity (see the module
            docstring); inf gives the constant-velocity model.
        report_max_sigma_mm: the filtered (and predicted) position is reported as NaN while its
            standard deviation (largest axis) exceeds this; the track itself goes on (gating,
            prior) until `max_coast_s`. inf reports every coasted estimate.
    """

    accel_noise_mm_s2: float = 10000.0
    measurement_sigma_mm: float = 3.0
    mm_per_px: float = 1.5
    min_score: float = 0.05
    initial_speed_sigma_mm_s: float = 300.0
    gate_sigma: float = 5.0
    reinit_after_rejections: int = 3
    max_coast_s: float = 0.25
    max_speed_mm_s: float = 2000.0
    two_view_noise_factor: float = 8.0
    velocity_time_constant_s: float = 0.1
    report_max_sigma_mm: float = math.inf

    def __post_init__(self) -> None:
        for name in ("accel_noise_mm_s2", "measurement_sigma_mm", "min_score", "initial_speed_sigma_mm_s",
                     "gate_sigma", "max_coast_s", "max_speed_mm_s",
                     "velocity_time_constant_s", "report_max_sigma_mm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"KalmanOptions.{name}: expected a number > 0, got {getattr(self, name)!r}")
        if self.mm_per_px < 0:
            raise ValueError(f"KalmanOptions.mm_per_px: expected >= 0, got {self.mm_per_px!r}")
        if not self.two_view_noise_factor >= 1:
            raise ValueError(
                f"KalmanOptions.two_view_noise_factor: expected >= 1, got {self.two_view_noise_factor!r}"
            )
        if self.reinit_after_rejections < 1:
            raise ValueError(
                f"KalmanOptions.reinit_after_rejections: expected >= 1, got {self.reinit_after_rejections!r}"
            )


@dataclass(frozen=True, slots=True)
class KalmanOutput:
    """One filter step for K keypoints.

    Attributes:
        filtered_mm: (K, 3) estimate at the frame set's capture time, mm (NaN: no track).
        predicted_mm: (K, 3) estimate extrapolated `predict_ahead_s` past the capture time, mm.
        variance_mm2: (K, 3) position variance per axis, mm^2.
        velocity_mm_s: (K, 3) velocity estimate, mm/s.
        status: (K,) int8, NO_TRACK / UPDATED / COASTING / GATED / STARTED.
    """

    filtered_mm: np.ndarray
    predicted_mm: np.ndarray
    variance_mm2: np.ndarray
    velocity_mm_s: np.ndarray
    status: np.ndarray


@njit(cache=True, error_model="numpy")
def _motion(accel_var, tau, dt):  # pragma: no cover - compiled
    """Discretised motion model over dt -> (velocity decay, position-from-velocity gain, Q_pp, Q_pv, Q_vv)."""
    if math.isfinite(tau):
        # Ornstein-Uhlenbeck velocity, x' = v, v' = -v / tau + w, white w of density accel_var * tau
        # (stationary speed sigma accel * tau / sqrt(2)): exact discretisation over dt
        dec = math.exp(-dt / tau)
        f_pv = tau * (1.0 - dec)
        sv2 = accel_var * tau * tau / 2.0
        q_vv = sv2 * (1.0 - dec * dec)
        q_pv = sv2 * tau * (1.0 - dec) ** 2
        q_pp = 2.0 * sv2 * tau * (dt - 2.0 * tau * (1.0 - dec) + tau * (1.0 - dec * dec) / 2.0)
        if q_pp < 0.0:  # rounding for dt << tau
            q_pp = 0.0
        return dec, f_pv, q_pp, q_pv, q_vv
    # constant velocity, piecewise-constant white acceleration over dt
    return 1.0, dt, accel_var * dt ** 4 / 4.0, accel_var * dt ** 3 / 2.0, accel_var * dt * dt


@njit(cache=True, error_model="numpy")
def kalman_step_kernel(
    pos, vel, cov, active, last_update_s, rejections, cand, cand_t_s, t_s, dt, z, err_px, score, n_views,
    accel_var, meas_var0, mm_per_px, min_score, init_vel_var, gate2, reinit_after, max_coast_s,
    max_speed, two_view_factor, tau, lead_s, out_filtered, out_predicted, out_var, out_vel, out_status, gated_total,
):  # pragma: no cover - compiled
    """Advance every keypoint by dt seconds and fuse z. State arrays are updated in place.

    pos, vel (K, 3); cov (K, 3, 3) holding (P_pp, P_pv, P_vv) per axis; active (K,) bool;
    last_update_s (K,); rejections (K,) int64; cand (K, 3) and cand_t_s (K,): the last gated
    measurement and its time; z (K, 3) mm (NaN = no measurement); err_px, score (K,); n_views (K,) int;
    accel_var, tau (K,): each keypoint's motion model. gated_total (K,) int64 counts GATED statuses.
    """
    n_kp = pos.shape[0]
    for k in range(n_kp):
        dec, f_pv, q_pp, q_pv, q_vv = _motion(accel_var[k], tau[k], dt)
        # forward prediction over lead_s follows the same motion model
        lead_f = tau[k] * (1.0 - math.exp(-lead_s / tau[k])) if math.isfinite(tau[k]) else lead_s
        has_z = math.isfinite(z[k, 0]) and math.isfinite(z[k, 1]) and math.isfinite(z[k, 2])
        s = score[k]
        if not math.isfinite(s):
            s = 1.0
        if s < min_score:
            s = min_score
        e = err_px[k]
        if not math.isfinite(e):
            e = 0.0
        r = (meas_var0 + (mm_per_px * e) ** 2) / s
        if n_views[k] == 2:
            r *= two_view_factor
        status = NO_TRACK
        if active[k]:
            for a in range(3):
                p_pp = cov[k, a, 0]
                p_pv = cov[k, a, 1]
                p_vv = cov[k, a, 2]
                pos[k, a] += vel[k, a] * f_pv
                vel[k, a] *= dec
                cov[k, a, 0] = p_pp + f_pv * (2.0 * p_pv + f_pv * p_vv) + q_pp
                cov[k, a, 1] = dec * (p_pv + f_pv * p_vv) + q_pv
                cov[k, a, 2] = dec * dec * p_vv + q_vv
            status = COASTING
            if has_z:
                d2 = 0.0
                for a in range(3):
                    y = z[k, a] - pos[k, a]
                    d2 += y * y / (cov[k, a, 0] + r)
                if d2 <= gate2:
                    for a in range(3):
                        y = z[k, a] - pos[k, a]
                        p_pp = cov[k, a, 0]
                        p_pv = cov[k, a, 1]
                        sv = p_pp + r
                        k0 = p_pp / sv
                        k1 = p_pv / sv
                        pos[k, a] += k0 * y
                        vel[k, a] += k1 * y
                        cov[k, a, 0] = (1.0 - k0) * p_pp
                        cov[k, a, 1] = (1.0 - k0) * p_pv
                        cov[k, a, 2] = cov[k, a, 2] - k1 * p_pv
                    speed = math.sqrt(vel[k, 0] ** 2 + vel[k, 1] ** 2 + vel[k, 2] ** 2)
                    if speed > max_speed:
                        for a in range(3):
                            vel[k, a] *= max_speed / speed
                    last_update_s[k] = t_s
                    rejections[k] = 0
                    status = UPDATED
                else:
                    status = GATED
                    gated_total[k] += 1
                    # does it agree with the previous rejected measurement? (a fresh track from
                    # there, zero velocity with the start-up uncertainty, would have accepted it)
                    consistent = False
                    if rejections[k] > 0:
                        dtc = t_s - cand_t_s[k]
                        var = 2.0 * r + dtc * dtc * init_vel_var + accel_var[k] * dtc * dtc * dtc * dtc / 4.0
                        d2c = 0.0
                        for a in range(3):
                            d2c += (z[k, a] - cand[k, a]) ** 2 / var
                        consistent = d2c <= gate2
                    rejections[k] = rejections[k] + 1 if consistent else 1
                    for a in range(3):
                        cand[k, a] = z[k, a]
                    cand_t_s[k] = t_s
                    if rejections[k] >= reinit_after:
                        active[k] = False  # restart below at this measurement
            if active[k] and status != UPDATED and t_s - last_update_s[k] > max_coast_s:
                active[k] = False
                status = NO_TRACK
        if not active[k] and has_z:
            for a in range(3):
                pos[k, a] = z[k, a]
                vel[k, a] = 0.0
                cov[k, a, 0] = r
                cov[k, a, 1] = 0.0
                cov[k, a, 2] = init_vel_var
            active[k] = True
            last_update_s[k] = t_s
            rejections[k] = 0
            status = STARTED
        out_status[k] = status
        if active[k]:
            for a in range(3):
                out_filtered[k, a] = pos[k, a]
                out_predicted[k, a] = pos[k, a] + vel[k, a] * lead_f
                out_var[k, a] = cov[k, a, 0]
                out_vel[k, a] = vel[k, a]
        else:
            for a in range(3):
                out_filtered[k, a] = math.nan
                out_predicted[k, a] = math.nan
                out_var[k, a] = math.nan
                out_vel[k, a] = math.nan


@njit(cache=True, error_model="numpy")
def predict_kernel(pos, vel, cov, active, accel_var, tau, dt, max_var, out):  # pragma: no cover - compiled
    """Positions dt seconds past the last step into out (K, 3); NaN without a track or where the
    predicted variance (largest axis) exceeds max_var. State as in `kalman_step_kernel`, unchanged."""
    for k in range(pos.shape[0]):
        ok = active[k]
        f_pv = 0.0
        if ok:
            _, f_pv, q_pp, _, _ = _motion(accel_var[k], tau[k], dt)
            for a in range(3):
                var = cov[k, a, 0] + f_pv * (2.0 * cov[k, a, 1] + f_pv * cov[k, a, 2]) + q_pp
                if not var <= max_var:
                    ok = False
        for a in range(3):
            out[k, a] = pos[k, a] + vel[k, a] * f_pv if ok else math.nan


class KalmanFilter3D:
    """Filters K keypoints over successive frame sets. Not thread-safe; one per fusion process.

    Example:
        kf = KalmanFilter3D(n_keypoints=8)
        out = kf.step(capture_ns, raw_mm, reprojection_error_px, score, predict_ahead_s=0.03)
    """

    def __init__(self, n_keypoints: int, options: KalmanOptions = KalmanOptions(),
                 motion: Sequence[tuple[float, float] | None] | None = None) -> None:
        """motion: per keypoint (accel_noise_mm_s2, velocity_time_constant_s) overriding the
        options' (e.g. a smooth constant-velocity model for the head, a decaying one for the paws);
        None entries keep the options' values."""
        if n_keypoints < 1:
            raise ValueError(f"n_keypoints: expected >= 1, got {n_keypoints}")
        self.options = options
        self.n_keypoints = n_keypoints
        self._accel_var = np.full(n_keypoints, options.accel_noise_mm_s2 ** 2)
        self._tau = np.full(n_keypoints, float(options.velocity_time_constant_s))
        if motion is not None:
            if len(motion) != n_keypoints:
                raise ValueError(f"motion: expected {n_keypoints} entries, got {len(motion)}")
            for k, m in enumerate(motion):
                if m is None:
                    continue
                accel, tau = float(m[0]), float(m[1])
                if not (accel > 0 and tau > 0):
                    raise ValueError(f"motion[{k}]: expected accel_noise_mm_s2 > 0 and velocity_time_constant_s > 0, got {m!r}")
                self._accel_var[k] = accel ** 2
                self._tau[k] = tau
        self._pos = np.zeros((n_keypoints, 3))
        self._vel = np.zeros((n_keypoints, 3))
        self._cov = np.zeros((n_keypoints, 3, 3))
        self._active = np.zeros(n_keypoints, np.bool_)
        self._last_update_s = np.zeros(n_keypoints)
        self._rejections = np.zeros(n_keypoints, np.int64)
        self._cand = np.zeros((n_keypoints, 3))
        self._cand_t_s = np.zeros(n_keypoints)
        self._t0_ns: int | None = None
        self._last_t_ns: int | None = None
        #: measurements rejected by the gate since construction, per keypoint
        self.gated_total = np.zeros(n_keypoints, np.int64)
        o = options
        self._params = (
            float(o.measurement_sigma_mm ** 2), float(o.mm_per_px), float(o.min_score),
            float(o.initial_speed_sigma_mm_s ** 2), float(o.gate_sigma ** 2), int(o.reinit_after_rejections),
            float(o.max_coast_s), float(o.max_speed_mm_s), float(o.two_view_noise_factor),
        )
        self._report_max_var = float(o.report_max_sigma_mm) ** 2 if math.isfinite(o.report_max_sigma_mm) else None

    def reset(self) -> None:
        """Forget every track (e.g. after a long pause of the pipeline)."""
        self._active[:] = False
        self._rejections[:] = 0
        self._last_t_ns = None
        self._t0_ns = None

    def predict_position(self, t_ns: int, max_sigma_mm: float = math.inf) -> np.ndarray:
        """(K, 3) positions the filter expects at t_ns, mm; the state is unchanged.

        NaN where there is no track, or where the prediction's standard deviation (largest axis)
        exceeds `max_sigma_mm`. The prior for `triangulate(..., prior_mm=...)`: it picks, among
        equally good camera subsets, the one that continues the track (a left/right swap in two of
        four views fits as well as the true pair) -- but only a confident prediction should decide.
        """
        out = np.empty((self.n_keypoints, 3))
        if self._last_t_ns is None:
            out.fill(np.nan)
            return out
        dt = max(0.0, (int(t_ns) - self._last_t_ns) * 1e-9)
        predict_kernel(self._pos, self._vel, self._cov, self._active, self._accel_var, self._tau, dt,
                       float(max_sigma_mm) ** 2, out)
        return out

    def step(
        self,
        t_ns: int,
        measurement_mm: np.ndarray,
        reprojection_error_px: np.ndarray | None = None,
        score: np.ndarray | None = None,
        predict_ahead_s: float = 0.0,
        n_views: np.ndarray | None = None,
    ) -> KalmanOutput:
        """Fuse one frame set: (K, 3) raw points (NaN = not triangulated) at capture time t_ns.

        `reprojection_error_px`, `score` and `n_views` ((K,) each; None: 0 px, 1, 3 views) set the
        measurement noise, see the module docstring.

        Frame sets must come in capture-time order; an older or equal time is filtered with dt = 0.
        """
        k = self.n_keypoints
        z = np.ascontiguousarray(measurement_mm, dtype=np.float64)
        if z.shape != (k, 3):
            raise ValueError(f"measurement_mm: expected shape ({k}, 3), got {z.shape}")
        err = np.zeros(k) if reprojection_error_px is None else np.ascontiguousarray(reprojection_error_px, np.float64)
        sc = np.ones(k) if score is None else np.ascontiguousarray(score, np.float64)
        nv = np.full(k, 3, np.int64) if n_views is None else np.ascontiguousarray(n_views, np.int64)
        if err.shape != (k,) or sc.shape != (k,) or nv.shape != (k,):
            raise ValueError(
                f"reprojection_error_px, score and n_views: expected shape ({k},), got {err.shape}, {sc.shape}, {nv.shape}"
            )
        t_s, dt = self.advance_clock(t_ns)
        out = self.new_output()
        kalman_step_kernel(
            *self.kernel_state(), t_s, dt, z, err, sc, nv, self._accel_var, *self._params, self._tau,
            float(predict_ahead_s), *out, self.gated_total,
        )
        return self.finish(*out)

    # -- for kernels that run a step inside a larger compiled call (fusion.process) ----------------

    def advance_clock(self, t_ns: int) -> tuple[float, float]:
        """Start a step at t_ns -> (t_s since the first step, dt since the previous one), seconds.
        The clock bookkeeping of `step`; `predict_position(t_ns)` before it uses the same dt."""
        if self._t0_ns is None:
            self._t0_ns = int(t_ns)
        dt = 0.0 if self._last_t_ns is None else max(0.0, (int(t_ns) - self._last_t_ns) * 1e-9)
        if self._last_t_ns is None or t_ns > self._last_t_ns:
            self._last_t_ns = int(t_ns)
        return (int(t_ns) - self._t0_ns) * 1e-9, dt

    def kernel_state(self) -> tuple[np.ndarray, ...]:
        """The state arrays, in `kalman_step_kernel`'s order (pos ... cand_t_s); updated in place."""
        return (self._pos, self._vel, self._cov, self._active, self._last_update_s, self._rejections,
                self._cand, self._cand_t_s)

    def kernel_model(self) -> tuple[np.ndarray, tuple[float | int, ...], np.ndarray]:
        """(accel_var (K,), the scalar options in kernel order, tau (K,)): the motion and noise model."""
        return self._accel_var, self._params, self._tau

    def report_max_var(self) -> float:
        """The variance (mm^2, largest axis) above which `finish` reports an estimate as NaN; -1: none."""
        return -1.0 if self._report_max_var is None else self._report_max_var

    def new_output(self) -> tuple[np.ndarray, ...]:
        """Fresh (filtered, predicted, variance, velocity (K, 3) each, status (K,) int8) for one step."""
        k = self.n_keypoints
        return np.empty((k, 3)), np.empty((k, 3)), np.empty((k, 3)), np.empty((k, 3)), np.empty(k, np.int8)

    def finish(self, filtered: np.ndarray, predicted: np.ndarray, var: np.ndarray, vel: np.ndarray,
               status: np.ndarray) -> KalmanOutput:
        """A step's kernel outputs -> KalmanOutput (vague estimates reported as NaN, see the options)."""
        if self._report_max_var is not None:
            vague = ~(var.max(axis=1) <= self._report_max_var)
            filtered[vague] = np.nan
            predicted[vague] = np.nan
        return KalmanOutput(filtered, predicted, var, vel, status)
