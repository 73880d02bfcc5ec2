"""The rig configuration: one TOML file, one typed, validated object.

`load_config(path)` reads the file and validates every key against the dataclasses below; any
problem raises `ConfigError` with the file, the key path and what was expected, e.g.::

    configs/rig.toml: cameras[2].fps: expected a number > 0, got 'thirty'

Relative paths in the file are resolved against the file's folder. Sections a stage does not use
may be left out; a section's defaults are documented on its dataclass.
"""
from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from ratrig.skeleton import KEYPOINTS, PAWS
from ratrig.tomlio import TOMLDecodeError, read_toml


class ConfigError(ValueError):
    """A configuration problem; the message names the file, the key and what was expected."""


# --------------------------------------------------------------------------------------------------
# Sections. Field comments are the reference documentation of the TOML keys.


@dataclass(frozen=True)
class NetworkConfig:
    host: str = "127.0.0.1"  # address every stage binds to; "0.0.0.0" opens the session to the network
    base_port: int = 5550  # ports are allocated from here upwards (see `Endpoints`)
    connect_host: str = "127.0.0.1"  # address other stages use to reach the binders
    # frames from each camera to inference through a shared-memory ring (ratrig.shmring) instead of
    # the ZeroMQ wire; every stage on this host only (network mode keeps the wire)
    shared_memory: bool = False
    ring_slots: int = 16  # frames per camera ring: how far a reader may fall behind before it is lapped
    # Several hosts (README): the address of the host that runs the cameras, which their endpoints bind
    # to and the other stages connect to; "" = host / connect_host like every other stage
    camera_host: str = ""
    # CurveZMQ authentication (key files from `ratrig keys`, relative to this file); all empty = none
    server_secret_key: str = ""  # the rig's server .key_secret: needed on every host that binds endpoints
    server_public_key: str = ""  # the server's public .key: enough on a host that only connects (viewer)
    client_secret_key: str = ""  # this host's client .key_secret
    allowed_client_keys: list[str] = field(default_factory=list)  # client public .key files let in

    @property
    def curve(self) -> bool:
        """Whether CurveZMQ keys are configured."""
        return bool(self.server_secret_key or self.server_public_key or self.client_secret_key
                    or self.allowed_client_keys)

    def validate(self, where: str) -> None:
        if not 1024 <= self.base_port <= 65000:
            raise ConfigError(f"{where}.base_port: expected a port in 1024..65000, got {self.base_port}")
        if self.curve and not self.client_secret_key:
            raise ConfigError(f"{where}.client_secret_key: CurveZMQ keys are configured, so this host needs its "
                              f"client .key_secret file (make one with `ratrig keys`)")
        if self.server_secret_key and not self.allowed_client_keys:
            raise ConfigError(f"{where}.allowed_client_keys: expected the client public .key files to let in "
                              f"(at least this host's own)")
        if not 2 <= self.ring_slots <= 1024:
            raise ConfigError(f"{where}.ring_slots: expected 2..1024, got {self.ring_slots}")
        loopback = ("127.0.0.1", "localhost", "::1")
        if self.shared_memory and (self.host not in loopback or self.connect_host not in loopback
                                   or self.camera_host not in ("", *loopback)):
            raise ConfigError(f"{where}.shared_memory: rings work between processes on one host; with host "
                              f"{self.host!r} / connect_host {self.connect_host!r} / camera_host "
                              f"{self.camera_host!r} (network mode) frames keep the ZeroMQ wire: set "
                              f"shared_memory = false or the hosts to 127.0.0.1")


@dataclass(frozen=True)
class CameraConfig:
    name: str
    # "synthetic" (the synthetic rig), "device:N" (OpenCV/V4L2 device N), "video:PATH" (a video file)
    source: str
    width: int = 640
    height: int = 480
    fps: float = 30.0
    exposure_us: Union[float, None] = None  # where the back-end supports it (OpenCV CAP_PROP_EXPOSURE)
    loop: bool = False  # video files: start again at the end
    pace: bool = True  # video files: real time (True) or as fast as possible (False)
    clock_offset_ms: float = 0.0  # fixed offset of this camera's timestamps (subtracted by fusion)

    def validate(self, where: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", self.name):
            raise ConfigError(f"{where}.name: expected letters, digits, '_' or '-', got {self.name!r}")
        if self.width <= 0 or self.height <= 0:
            raise ConfigError(f"{where}: expected positive width and height, got {self.width}x{self.height}")
        if not self.fps > 0:
            raise ConfigError(f"{where}.fps: expected a number > 0, got {self.fps}")
        kind = self.source_kind
        if kind not in ("synthetic", "device", "video"):
            raise ConfigError(
                f"{where}.source: expected 'synthetic', 'device:N' or 'video:PATH', got {self.source!r}"
            )
        if kind == "device" and not re.fullmatch(r"\d+|/dev/\S+", self.source_arg):
            raise ConfigError(f"{where}.source: expected 'device:N' or 'device:/dev/videoN', got {self.source!r}")
        if kind == "video" and not self.source_arg:
            raise ConfigError(f"{where}.source: expected 'video:PATH', got {self.source!r}")

    def check_source(self, where: str) -> None:
        """Whether the device node or video file exists now (load_config(check_sources=True))."""
        kind = self.source_kind
        if kind == "video" and not Path(self.source_arg).is_file():
            raise ConfigError(f"{where}.source: video file {self.source_arg!r} not found")
        if kind == "device":
            node = Path(self.source_arg if self.source_arg.startswith("/dev/") else f"/dev/video{self.source_arg}")
            if not node.exists():
                raise ConfigError(f"{where}.source: camera device {node} does not exist (is the camera plugged in?)")

    @property
    def source_kind(self) -> str:
        return self.source.split(":", 1)[0]

    @property
    def source_arg(self) -> str:
        return self.source.split(":", 1)[1] if ":" in self.source else ""


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 0
    walls: Literal["clear", "opaque"] = "clear"
    noise_std: float = 2.0  # pixel noise, grey levels
    blur: bool = False
    exposure_jitter: float = 0.0  # relative brightness changes per frame
    drop_prob: float = 0.0  # fault: probability that a frame is lost before publishing
    jitter_ms: float = 0.0  # fault: timestamp jitter (std, ms)
    die_after_s: dict[str, float] = field(default_factory=dict)  # fault: camera name -> seconds
    session_s: float = 600.0  # length of the simulated walk; longer sessions loop it


@dataclass(frozen=True)
class InferenceConfig:
    # Exported DeepLabCut model: a TensorFlow export folder (pose_cfg.yaml + .pb) or a DeepLabCut 3
    # PyTorch .pt file. Empty: no inference stage.
    model: str = ""
    engine: Literal["auto", "tensorflow", "pytorch", "tflite", "tensorrt"] = "auto"
    resize: float = 1.0
    cropping: Union[list[int], None] = None  # [x1, x2, y1, y2]
    dynamic: bool = False  # DLC-Live dynamic cropping around the animal
    dynamic_threshold: float = 0.5
    dynamic_margin: int = 20
    workers: Union[list[list[str]], None] = None  # camera names per worker; default one per camera
    batch: bool = True  # one forward pass for all cameras of a worker that belong to one moment
    keypoint_map: dict[str, str] = field(default_factory=dict)  # model bodypart -> pipeline keypoint
    threads: int = 1  # intra-op threads per worker
    device: str = "cpu"  # pytorch device, e.g. "cuda:0"
    # A worker serving several cameras runs the newest moment all its live cameras have a frame of.
    moment_wait_ms: Union[float, None] = None  # wait this long for a late frame; default one frame period
    camera_timeout_s: Union[float, None] = None  # a camera silent this long is dead; default max(0.5 s, 5 periods)

    def validate(self, where: str) -> None:
        if self.moment_wait_ms is not None and not self.moment_wait_ms >= 0:
            raise ConfigError(f"{where}.moment_wait_ms: expected a number >= 0, got {self.moment_wait_ms}")
        if self.camera_timeout_s is not None and not self.camera_timeout_s > 0:
            raise ConfigError(f"{where}.camera_timeout_s: expected a number > 0, got {self.camera_timeout_s}")
        if not 0 < self.resize <= 4:
            raise ConfigError(f"{where}.resize: expected a number in (0, 4], got {self.resize}")
        if self.cropping is not None and len(self.cropping) != 4:
            raise ConfigError(f"{where}.cropping: expected [x1, x2, y1, y2], got {self.cropping}")
        if self.threads < 1:
            raise ConfigError(f"{where}.threads: expected >= 1, got {self.threads}")


@dataclass(frozen=True)
class CalibrationConfig:
    file: str = ""  # Anipose calibration.toml; empty on the synthetic rig = the true calibration


@dataclass(frozen=True)
class FusionConfig:
    enabled: bool = True
    tolerance_ms: Union[float, None] = None  # frame-set grouping tolerance; default a quarter frame period
    max_wait_ms: Union[float, None] = None  # how long a frame set waits for late cameras; default 2 periods
    min_likelihood: float = 0.5  # 2D points below this are not used
    outlier_threshold_px: float = 8.0  # a view whose reprojection error exceeds this is dropped
    process_noise: float = 10000.0  # Kalman white-acceleration noise, mm/s^2 (a landing paw decelerates ~1e4)
    gate_sigma: float = 5.0  # Mahalanobis gate
    max_coast_ms: float = 250.0  # coasting through occlusions before giving up
    velocity_time_constant_ms: float = 100.0  # Kalman velocity decay (see fusion.kalman); inf = constant velocity
    predict_ahead_ms: Union[float, Literal["auto"]] = 0.0  # forward prediction; "auto" = measured latency
    max_sigma_mm: float = 15.0  # filtered positions vaguer than this (coasting) are published as NaN; inf = all
    # per-keypoint motion model, e.g. [fusion.keypoint_motion.nose] process_noise = 3000, velocity_time_constant_ms = inf
    keypoint_motion: dict[str, dict[str, float]] = field(default_factory=dict)
    # keypoints (paws) seen by one camera only get a floor point (see fusion/floor.py) for the events stage
    floor_keypoints: list[str] = field(default_factory=list)
    floor_height_mm: float = 4.0  # height of a planted paw's keypoint above the floor


@dataclass(frozen=True)
class EventsConfig:
    """Paw placement detection, rule triggers and output plugins (see `events/` for the details).

    Thresholds left unset (None) are derived from `rat_length_mm` (events.paw.default_thresholds);
    `paws` overrides any threshold per paw, e.g. ``[events.paws.hind_left_paw] touchdown_height_mm = 10``.
    """

    enabled: bool = True
    rat_length_mm: float = 230.0  # nose to tail base; scales the default thresholds
    touchdown_height_mm: Union[float, None] = None  # paw keypoint z below this (and slow) = on the floor
    liftoff_height_mm: Union[float, None] = None  # z above this (or fast) = off the floor
    touchdown_speed_mm_s: Union[float, None] = None
    liftoff_speed_mm_s: Union[float, None] = None
    min_duration_ms: Union[float, None] = None  # a new state must hold this long (default 0: first frame)
    speed_window_ms: Union[float, None] = None  # span the paw speed is measured over (default 70)
    liftoff_distance_mm: Union[float, None] = None  # a planted paw must also move this far to lift off
    last_frame_fraction: Union[float, None] = None  # see events.paw.PawThresholds (default 0.8)
    max_gap_ms: Union[float, None] = None  # a paw unseen for longer is forgotten (default 250)
    floor_tolerance_mm: Union[float, None] = None  # a paw lower than -this is a triangulation error (default 8)
    max_two_view_error_px: Union[float, None] = None  # 2-view paws with a larger reprojection error are ignored (default inf: off)
    single_view_min_duration_ms: Union[float, None] = None  # decisions on one-camera floor points must hold this long (default 40)
    step_distance_mm: Union[float, None] = None  # a planted paw this far from where it stood has stepped, however slowly
    paws: dict[str, dict[str, float]] = field(default_factory=dict)  # per-paw overrides of the above
    # [x_min, y_min, x_max, y_max] world mm: the floor a paw can stand on (the arena plus a margin);
    # paw positions outside it are errors (e.g. a hanging paw's floor point beyond the wall). Empty: no bound
    floor_area_mm: list[float] = field(default_factory=list)
    # output plugins: tables with type = "serial" | "udp" | "zmq" | "python"; validated by `events`
    outputs: list[dict[str, Any]] = field(default_factory=list)
    # rule triggers: tables {name = "rearing", when = "nose.z > 150 mm for 0.3 s"}; validated by `events`
    rules: list[dict[str, Any]] = field(default_factory=list)
    stats_interval_s: float = 1.0  # how often the events process publishes stats/events

    def validate(self, where: str) -> None:
        if not self.rat_length_mm > 0:
            raise ConfigError(f"{where}.rat_length_mm: expected a number > 0, got {self.rat_length_mm}")
        if not self.stats_interval_s > 0:
            raise ConfigError(f"{where}.stats_interval_s: expected a number > 0, got {self.stats_interval_s}")


@dataclass(frozen=True)
class RecorderConfig:
    codec: Literal["ffv1", "mjpeg", "h264"] = "ffv1"  # ffv1: lossless; mjpeg: visually lossless
    quality: int = 95
    flush_interval_s: float = 1.0  # video segments are closed and tables fsynced at least this often
    min_free_gb: float = 2.0  # refuse to start below this much free disk; stop writing video below it
    warn_free_gb: float = 10.0  # warn (and log the time left at the current rate) below this much free disk
    queue_frames: int = 90  # per-camera writer queue; a frame that finds it full is counted as lost
    rcvhwm: int = 2000  # ZeroMQ receive high-water mark of the recorder (messages buffered before the sender drops)

    def validate(self, where: str) -> None:
        if not 0.05 <= self.flush_interval_s <= 60:
            raise ConfigError(f"{where}.flush_interval_s: expected 0.05..60 s, got {self.flush_interval_s}")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"{where}.quality: expected 1..100, got {self.quality}")
        if self.queue_frames < 1:
            raise ConfigError(f"{where}.queue_frames: expected >= 1, got {self.queue_frames}")
        if self.rcvhwm < 0:
            raise ConfigError(f"{where}.rcvhwm: expected >= 0 (0 = unlimited), got {self.rcvhwm}")
        if self.min_free_gb < 0 or self.warn_free_gb < self.min_free_gb:
            raise ConfigError(f"{where}: expected 0 <= min_free_gb <= warn_free_gb, got {self.min_free_gb}, {self.warn_free_gb}")


@dataclass(frozen=True)
class ViewerConfig:
    redraw_hz: float = 60.0
    image_scale: float = 0.5
    trail_s: float = 1.0


@dataclass(frozen=True)
class CorridorConfig:
    length_mm: float = 1500.0
    width_mm: float = 70.0
    wall_height_mm: float = 230.0


@dataclass(frozen=True)
class ApparatusConfig:
    """Test apparatus geometry in the world frame (used by `analysis`)."""

    cylinder_center_mm: list[float] = field(default_factory=lambda: [0.0, 0.0])  # (x, y) of the cylinder axis
    cylinder_radius_mm: float = 100.0  # inner radius (a 20 cm diameter cylinder)
    pots_mm: list[list[float]] = field(default_factory=list)  # corridor pot centres, [[x, y], ...]
    pot_zone_radius_mm: float = 20.0  # the nose is in a pot's zone within this horizontal distance

    def validate(self, where: str) -> None:
        if len(self.cylinder_center_mm) != 2:
            raise ConfigError(f"{where}.cylinder_center_mm: expected [x, y] in mm, got {self.cylinder_center_mm}")
        if not self.cylinder_radius_mm > 0:
            raise ConfigError(f"{where}.cylinder_radius_mm: expected a number > 0, got {self.cylinder_radius_mm}")
        if not self.pot_zone_radius_mm > 0:
            raise ConfigError(f"{where}.pot_zone_radius_mm: expected a number > 0, got {self.pot_zone_radius_mm}")
        for i, pot in enumerate(self.pots_mm):
            if len(pot) != 2:
                raise ConfigError(f"{where}.pots_mm[{i}]: expected [x, y] in mm, got {pot}")


@dataclass(frozen=True)
class BehaviourConfig:
    """Behaviour features, segmentation and dyskinesia proxies (see `analysis/behaviour/README.md`).

    The live stage (`python -m analysis.behaviour.process`) runs only when `enabled` is true. The
    proxies are measures from 3D for raters to compare with their scores, not AIMs scores.
    """

    enabled: bool = False  # start the live behaviour stage in `ratrig run/demo`
    lesion_side: Literal["left", "right", "none"] = "none"  # turns left/right into ipsi/contra
    window_s: float = 1.0  # sliding window of the per-frame-set features
    long_window_s: float = 3.0  # net rotation, sustained bend and twist, nose oscillation (a U-turn turns 180 deg)
    n_states: int = 8  # segmentation states (Gaussian HMM)
    warmup_s: float = 60.0  # live, without `model`: fit the segmenter on this much data, then freeze it
    model: str = ""  # a segmenter saved by `python -m analysis.behaviour fit` (.npz); relative to this file
    stats_interval_s: float = 1.0

    def validate(self, where: str) -> None:
        for key in ("window_s", "long_window_s", "warmup_s", "stats_interval_s"):
            value = getattr(self, key)
            if not value > 0:
                raise ConfigError(f"{where}.{key}: expected a number > 0, got {value!r}")
        if not 0.2 <= self.window_s <= 10:
            raise ConfigError(f"{where}.window_s: expected 0.2..10 s, got {self.window_s!r}")
        if not 2 <= self.n_states <= 30:
            raise ConfigError(f"{where}.n_states: expected an integer 2..30, got {self.n_states!r}")


@dataclass(frozen=True)
class RigConfig:
    """The whole rig. `path` is the file it came from (None when built in code)."""

    name: str
    cameras: list[CameraConfig]
    keypoints: list[str] = field(default_factory=lambda: list(KEYPOINTS))
    network: NetworkConfig = field(default_factory=NetworkConfig)
    corridor: CorridorConfig = field(default_factory=CorridorConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    recorder: RecorderConfig = field(default_factory=RecorderConfig)
    viewer: ViewerConfig = field(default_factory=ViewerConfig)
    apparatus: ApparatusConfig = field(default_factory=ApparatusConfig)
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)
    path: Union[str, None] = None

    def validate(self, where: str) -> None:
        if not self.cameras:
            raise ConfigError(f"{where}cameras: expected at least one [[cameras]] table")
        names = [c.name for c in self.cameras]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"{where}cameras: camera names must be unique, {dupes} appear more than once")
        if self.inference.workers is not None:
            seen: list[str] = []
            for i, group in enumerate(self.inference.workers):
                for cam in group:
                    if cam not in names:
                        raise ConfigError(
                            f"{where}inference.workers[{i}]: unknown camera {cam!r}; cameras are {names}"
                        )
                    if cam in seen:
                        raise ConfigError(f"{where}inference.workers[{i}]: camera {cam!r} is served twice")
                    seen.append(cam)
        for cam in self.synthetic.die_after_s:
            if cam not in names:
                raise ConfigError(f"{where}synthetic.die_after_s: unknown camera {cam!r}; cameras are {names}")
        for model_name, kp in self.inference.keypoint_map.items():
            if kp not in self.keypoints:
                raise ConfigError(
                    f"{where}inference.keypoint_map.{model_name}: {kp!r} is not one of the rig keypoints {self.keypoints}"
                )
        for kp, motion in self.fusion.keypoint_motion.items():
            if kp not in self.keypoints:
                raise ConfigError(f"{where}fusion.keypoint_motion.{kp}: not one of the rig keypoints {self.keypoints}")
            unknown = set(motion) - {"process_noise", "velocity_time_constant_ms"}
            if unknown:
                raise ConfigError(f"{where}fusion.keypoint_motion.{kp}: unknown keys {sorted(unknown)}; expected "
                                  f"process_noise and/or velocity_time_constant_ms")
            for key, value in motion.items():
                if not float(value) > 0:
                    raise ConfigError(f"{where}fusion.keypoint_motion.{kp}.{key}: expected a number > 0, got {value!r}")
        for kp in self.fusion.floor_keypoints:
            if kp not in self.keypoints:
                raise ConfigError(f"{where}fusion.floor_keypoints: {kp!r} is not one of the rig keypoints {self.keypoints}")
        if not self.fusion.max_sigma_mm > 0:
            raise ConfigError(f"{where}fusion.max_sigma_mm: expected a number > 0 (inf: publish every estimate), "
                              f"got {self.fusion.max_sigma_mm!r}")
        for paw in self.events.paws:
            if paw not in PAWS:
                raise ConfigError(f"{where}events.paws: unknown paw {paw!r}; expected one of {list(PAWS)}")
        ports = Endpoints(self).all_ports()
        clash = sorted({p for p in ports if ports.count(p) > 1})
        if clash:
            raise ConfigError(f"{where}network.base_port: endpoints clash on ports {clash}")
        if max(ports) > 65535:
            raise ConfigError(f"{where}network.base_port: {self.network.base_port} leaves no room for {len(ports)} ports")

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def worker_groups(self) -> list[list[str]]:
        """Camera names per inference worker."""
        if self.inference.workers is not None:
            return [list(g) for g in self.inference.workers if g]
        return [[c.name] for c in self.cameras]

    def resolve(self, value: str) -> str:
        """A path from the file, resolved against the file's folder."""
        if not value or self.path is None or os.path.isabs(value):
            return value
        return str((Path(self.path).parent / value).resolve())


# --------------------------------------------------------------------------------------------------
# Endpoints. Every stage binds one PUB socket; the supervisor binds one directory (REP) socket that a
# viewer on another machine asks for the others.


@dataclass(frozen=True)
class Endpoints:
    rig: RigConfig

    def _port(self, offset: int) -> int:
        return self.rig.network.base_port + offset

    def _url(self, host: str, port: int) -> str:
        return f"tcp://{host}:{port}"

    # offsets: 0 directory, 1..  cameras, 40.. workers, 80 fusion, 81 events, 82 recorder,
    # 83 supervisor, 84 evaluator (synthetic rig), 85 calibration recorder, 86 transport monitor (probe),
    # 87 behaviour
    def ports(self) -> dict[str, int]:
        p = {"directory": self._port(0), "fusion": self._port(80), "events": self._port(81),
             "recorder": self._port(82), "supervisor": self._port(83), "evaluator": self._port(84),
             "calibration-recorder": self._port(85), "monitor": self._port(86), "behaviour": self._port(87)}
        for i, cam in enumerate(self.rig.cameras):
            p[f"camera/{cam.name}"] = self._port(1 + i)
        for j in range(len(self.rig.worker_groups())):
            p[f"inference/{j}"] = self._port(40 + j)
        return p

    def all_ports(self) -> list[int]:
        return list(self.ports().values())

    def bind(self, key: str) -> str:
        net = self.rig.network
        return self._url(net.camera_host if net.camera_host and key.startswith("camera/") else net.host,
                         self.ports()[key])

    def connect(self, key: str) -> str:
        net = self.rig.network
        return self._url(net.camera_host if net.camera_host and key.startswith("camera/") else net.connect_host,
                         self.ports()[key])

    def directory(self) -> dict[str, str]:
        """Every endpoint a subscriber may connect to, by key."""
        return {k: self.connect(k) for k in self.ports()}


# --------------------------------------------------------------------------------------------------
# Generic validation over the dataclasses above.


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is Any:
        return "any value"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join("nothing" if a is type(None) else _describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a table of {_describe(typing.get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def _convert(value: Any, tp: Any, where: str, file: str) -> Any:
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{file}: {where}: expected {_describe(tp)}, got {value!r}")
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where, file)
            except ConfigError:
                continue
        raise bad
    if origin is list:
        if not isinstance(value, list):
            raise bad
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{where}[{i}]", file) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad
        _, item = typing.get_args(tp)
        return {str(k): _convert(v, item, f"{where}.{k}", file) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise bad
        return _build(tp, value, where, file)
    raise TypeError(f"unsupported config type {tp!r}")


def _build(cls: type, data: Mapping[str, Any], where: str, file: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}
    prefix = f"{where}." if where else ""
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"{file}: {prefix}{unknown[0]}: unknown key; expected one of {sorted(fields)}"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{prefix}{name}", file)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{file}: {prefix}{name}: missing; expected {_describe(hints[name])}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None and cls is not RigConfig:
        try:
            validate(f"{prefix.rstrip('.')}")
        except ConfigError as e:
            raise ConfigError(f"{file}: {e}") from None
    return obj


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Resolve the file's relative paths (video sources, model, calibration) against `base`."""
    data = dict(data)
    cams = []
    for cam in data.get("cameras", []) if isinstance(data.get("cameras"), list) else []:
        if isinstance(cam, Mapping) and isinstance(cam.get("source"), str) and cam["source"].startswith("video:"):
            p = cam["source"][len("video:"):]
            if not os.path.isabs(p):
                cam = dict(cam, source="video:" + str((base / p).resolve()))
        cams.append(cam)
    if cams:
        data["cameras"] = cams
    for section, key in (("inference", "model"), ("calibration", "file"), ("behaviour", "model")):
        sec = data.get(section)
        if isinstance(sec, Mapping) and isinstance(sec.get(key), str) and sec[key] and not os.path.isabs(sec[key]):
            data[section] = dict(sec, **{key: str((base / sec[key]).resolve())})
    net = data.get("network")
    if isinstance(net, Mapping):  # CurveZMQ key files
        net = dict(net)
        for key in ("server_secret_key", "server_public_key", "client_secret_key"):
            if isinstance(net.get(key), str) and net[key] and not os.path.isabs(net[key]):
                net[key] = str((base / net[key]).resolve())
        if isinstance(net.get("allowed_client_keys"), list):
            net["allowed_client_keys"] = [str((base / k).resolve()) if isinstance(k, str) and not os.path.isabs(k) else k
                                          for k in net["allowed_client_keys"]]
        data["network"] = net
    return data


def config_from_dict(data: Mapping[str, Any], file: str = "<config>", path: str | None = None) -> RigConfig:
    """Validate a parsed TOML document. Raises ConfigError."""
    data = dict(data)
    if "name" not in data:
        data["name"] = Path(file).stem
    if "cameras" not in data:
        raise ConfigError(f"{file}: cameras: missing; expected at least one [[cameras]] table")
    rig = _build(RigConfig, data, "", file)
    rig = dataclasses.replace(rig, path=path)
    try:
        rig.validate("")
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from None
    return rig


def load_config(path: str | os.PathLike[str], check_sources: bool = False) -> RigConfig:
    """Read and validate a rig TOML file. Raises ConfigError naming the file and the key.

    check_sources: also check that every camera's device node / video file exists (done by
    `ratrig run` before starting; off for tools that only read the config, like the viewer).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = read_toml(path)
    except TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    data = _resolve_paths(data, path.parent.resolve())
    rig = config_from_dict(data, file=str(path), path=str(path.resolve()))
    if check_sources:
        for i, cam in enumerate(rig.cameras):
            try:
                cam.check_source(f"cameras[{i}]")
            except ConfigError as e:
                raise ConfigError(f"{path}: {e}") from None
    return rig


def load_section(path: str | os.PathLike[str], section: str) -> Any:
    """Read and validate one section of a rig TOML file, ignoring the others (default when absent).

    For readers of a recorded session's rig.toml on another machine, where the camera devices and
    video files of the other sections need not exist. Raises ConfigError naming the file and key.
    """
    path = Path(path)
    hints = typing.get_type_hints(RigConfig)
    if section not in hints or not dataclasses.is_dataclass(hints[section]):
        raise ConfigError(f"{path}: {section}: not a section of the rig config")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = read_toml(path)
    except TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return _convert(data.get(section, {}), hints[section], section, str(path))


def replace_section(rig: RigConfig, section: str, **changes: Any) -> RigConfig:
    """A new RigConfig with `changes` applied to one section (for CLI flag overrides)."""
    return dataclasses.replace(rig, **{section: dataclasses.replace(getattr(rig, section), **changes)})


def config_to_dict(rig: RigConfig) -> dict[str, Any]:
    """RigConfig -> a TOML-ready dict (None values left out, as TOML has no null)."""

    def clean(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: clean(getattr(value, f.name)) for f in dataclasses.fields(value)
                    if f.name != "path" and getattr(value, f.name) is not None}
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return clean(rig)


def save_config(rig: RigConfig, path: str | os.PathLike[str]) -> None:
    """Write the effective config (absolute paths) atomically; `load_config` reads it back equal."""
    from ratrig.tomlio import write_toml

    write_toml(path, config_to_dict(rig))
