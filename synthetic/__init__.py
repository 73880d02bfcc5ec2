"""The synthetic rig: a walking rat, four virtual cameras and exact ground truth.

(Other modules here, written by other stages on top of this API: ``live`` (scheduled live cameras),
``evaluate`` (live accuracy), ``charuco`` (calibration videos), ``scenarios_cylinder`` and
``scenarios_corridor_pots`` (behaviour tests), ``dyskinesia`` (scripted abnormal movements with
known onset, duration and intensity, for `analysis.behaviour`).)

A test world for every stage, never a substitute for real cameras or real DeepLabCut models. Only
tests, benchmarks, the CLI and the demo path import it. World frame: mm, x along the corridor,
y across, z up, floor z = 0. Times in s (trajectory time) or ns (capture stamps).

Public API (names kept stable):

``synthetic.rig``
    ``Corridor(length_mm=1500, width_mm=70, wall_height_mm=230, clear_walls=True)``: geometry.
    ``default_rig(corridor=None) -> ratrig.camera.Calibration``: cameras ``cam_ne``, ``cam_nw``,
    ``cam_sw``, ``cam_se`` (90 deg apart at the diagonals, 640x480, fx 590-620 px, k1 -0.10..0.03,
    ~0.75 m from the corridor centre, looking down ~50 deg). ``CAMERA_NAMES``.

``synthetic.rat``
    ``simulate(duration_s, fps, seed, scenario="corridor", lesion=None, corridor=None) -> Trajectory``.
    ``Trajectory``: times_s (T,), keypoints_mm (T, K, 3) in ``ratrig.skeleton.KEYPOINTS`` order,
    keypoint_names, extra_mm (T, E, 3), extra_names (``EXTRA_NAMES``: spine_1..3, tail_mid,
    tail_tip), contacts {paw: (M, 2) [touchdown_s, liftoff_s]}, in_stance (T, 4) bool (PAWS order),
    paw_names, body_speed_mm_s (T,), pauses_s, rears_s, lesion, seed; ``pose_at(t)`` -> keypoints,
    extras at any time(s); ``in_stance_at(t)``.
    ``Lesion(side="left", stride_factor=0.8)``: that side's stride length x factor.
    ``PAW_CONTACT_Z_MM``: paw keypoint height during stance (4 mm, the paw's centre).

``synthetic.render``
    ``Renderer(calibration, corridor=None, seed=0, noise=None)``;
    ``.render(camera, keypoints_mm (K,3), extra_mm (E,3), t_s=None) -> (H, W, 3) uint8 BGR``;
    ``.visibility(camera, keypoints_mm, extra_mm) -> (K,) bool`` (in image, not behind an opaque
    wall, not hidden by the body); ``.background(camera)``. camera = index or name.
    ``NoiseOptions(sensor_noise_sigma, blur_sigma_px, exposure_jitter)``.
    ``body_parts``, ``in_image``, ``behind_walls``, ``hidden_by_body``: the geometry underneath.

``synthetic.source``
    ``SyntheticSource(camera_name, fps=30, seed=0, faults=Faults(), *, epoch_ns=None, corridor,
    lesion, noise, calibration, trajectory_s=300, paced=False)``;
    ``.read() -> (ok, frame | None, capture_ns)``; ``.render_at(t_s)``; ``.pose_at(t_s)``;
    ``.visibility_at(t_s)``; ``.dead``; ``.frame_index``; ``.last_true_capture_ns``; ``.calibration``.
    ``Faults(drop_prob=0, jitter_ms=0, die_after_s=None)``.

``synthetic.dataset``
    ``training_samples(n, seed, *, corridor, noise, calibration, trajectory_s=120, min_visible=4)``
    yields ``Sample(image, camera_name, keypoints_px (K, 2), visible (K,), seed, t_s)``.

``synthetic.session``
    ``write_session(out_dir, duration_s, fps=30, seed=0, *, corridor, lesion, noise, start_ns,
    codec="ffv1") -> manifest dict``; ``load_session(dir) -> (manifest, arrays)``.
    ``synthetic.cli_session.main(argv) -> int`` backs ``ratrig synth session OUT --duration S``.
"""
