"""Loading exported DeepLabCut models and running them: the one place that knows about `dlclive`.

Two engines run here, chosen by what the model path holds (`detect_engine`):

* ``tensorflow``: a DeepLabCut TensorFlow export folder (``pose_cfg.yaml`` + a frozen ``*.pb``), run
  by ``dlclive`` with ``model_type="base"``.
* ``pytorch``: a DeepLabCut 3 PyTorch export, one ``.pt`` file holding ``{"config", "pose", ...}``,
  run by ``dlclive`` with ``model_type="pytorch"``.

``tflite`` and ``tensorrt`` are refused with a clear message: dlclive 1.1.0 cannot run them (its
engine/runner names do not match and a str/int comparison raises TypeError; measured, see
/work/shared/notes/dependency-facts.md). `import dlclive` itself fails without torch (its package
``__init__`` imports the benchmark module, which imports torch); `import_dlclive` turns that into one
message that says what to install.

Batching. dlclive runs one frame per call. For a worker that serves several cameras this module also
runs one forward pass for the frames of one moment:

* TensorFlow: the same frozen graph in our own ``tf.compat.v1`` session with a batch dimension, decoded
  exactly like dlclive (score-map argmax; cell * stride + stride / 2 + offset * locref_stdev, offsets
  interleaved (dx, dy) per joint).
* PyTorch: the model dlclive builds (``PoseModel.build``) with its own transforms and predictor, on a
  stacked batch. Bottom-up single-animal models only; others run through dlclive frame by frame.

Frames are prepared exactly as ``DLCLive.process_frame`` does (static crop, dynamic crop from the
previous pose of that camera, ``cv2.resize``, BGR->RGB) and poses are mapped back exactly as
``DLCLive._post_process_pose`` does, so the batched path returns what ``DLCLive.get_pose`` returns
(tests/test_inference_engines.py checks both engines against dlclive on the same frames).
"""
from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ratrig.config import InferenceConfig

ENGINES = ("tensorflow", "pytorch")
BROKEN_ENGINES = {
    "tflite": "dlclive 1.1.0 cannot run TensorFlow Lite models (its 'lite' engine name does not match the "
    "runner's 'tflite' check). Use engine = \"tensorflow\" with the same export folder.",
    "tensorrt": "dlclive 1.1.0 cannot run TensorRT models (its TensorRT path fails with a str/int TypeError "
    "and needs a GPU build of TensorFlow). Use engine = \"tensorflow\", or export a DeepLabCut 3 PyTorch "
    "model and set engine = \"pytorch\" with device = \"cuda:0\" for GPU inference.",
}


class ModelError(ValueError):
    """A model that cannot be used: missing, corrupt, wrong engine, keypoints that do not match."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What `check_model` found out about a model, before any camera is opened.

    Attributes:
        path: the model path (export folder or .pt file), absolute.
        engine: "tensorflow" or "pytorch".
        sha256: hex digest of the weights file (the .pb or the .pt).
        bodyparts: the model's bodypart names, in output order.
        keypoints: the pipeline keypoint names the worker publishes, in order.
        keypoint_index: for each pipeline keypoint, its row in the model output.
        stride: output stride of the network (None where the export does not state it).
        can_batch: whether the batched path (one forward pass for several frames) supports this model.
    """

    path: str
    engine: str
    sha256: str
    bodyparts: tuple[str, ...]
    keypoints: tuple[str, ...]
    keypoint_index: tuple[int, ...]
    stride: float | None
    can_batch: bool


# --------------------------------------------------------------------------------------------------
# Imports


def import_dlclive(device: str = "cpu") -> Any:
    """`import dlclive` with one clear message for its known import problems."""
    if not device.startswith("cuda"):
        block_triton_on_cpu()
    try:
        return importlib.import_module("dlclive")
    except ImportError as e:
        missing = getattr(e, "name", None) or str(e)
        hint = ""
        if missing and "torch" in missing:
            hint = (" dlclive 1.1.0 imports torch in its package __init__ (benchmark module) even for "
                    "TensorFlow models: install the CPU wheel, e.g. `pip install torch==2.13.0`.")
        raise ModelError(f"cannot import dlclive (DeepLabCut-Live): {e}.{hint}") from None


def _import_tf() -> Any:
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ModelError(f"engine 'tensorflow' needs TensorFlow (`pip install tensorflow-cpu`): {e}") from None
    return tf


def block_triton_on_cpu() -> None:
    """Keep torch from importing triton in a CPU process.

    The CUDA build of torch ships triton; torchvision/timm import torch._dynamo, which imports triton,
    whose libtriton segfaults when it is loaded after TensorFlow (measured: `import dlclive; import timm`
    crashes; dlclive imports TensorFlow first). triton only compiles GPU kernels, so a CPU worker marks
    it unavailable (torch then treats triton as not installed). A process that already imported triton,
    or that asked for a CUDA device, is left alone.
    """
    import sys

    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]  # makes `import triton` raise ImportError


def _import_torch(device: str = "cpu") -> Any:
    if not device.startswith("cuda"):
        block_triton_on_cpu()
    try:
        import torch
    except ImportError as e:
        raise ModelError(f"engine 'pytorch' needs torch (`pip install torch`): {e}") from None
    return torch


# --------------------------------------------------------------------------------------------------
# Checking a model


def detect_engine(path: str | os.PathLike[str]) -> str:
    """'tensorflow' for an export folder (pose_cfg.yaml + *.pb), 'pytorch' for a .pt file.

    Raises ModelError naming the path and what was expected.
    """
    p = Path(path)
    if not str(path):
        raise ModelError("inference.model: no model given; expected a DeepLabCut export folder or a .pt file")
    if not p.exists():
        raise ModelError(f"inference.model: {p} does not exist; expected a DeepLabCut TensorFlow export folder "
                         "(pose_cfg.yaml + .pb) or a DeepLabCut 3 PyTorch .pt file")
    if p.is_dir():
        has_cfg = (p / "pose_cfg.yaml").is_file()
        pbs = sorted(p.glob("*.pb"))
        if has_cfg and pbs:
            return "tensorflow"
        pts = sorted(p.glob("*.pt"))
        if len(pts) == 1 and not pbs:
            return "pytorch"
        what = [] if has_cfg else ["pose_cfg.yaml"]
        what += [] if pbs else ["a frozen graph *.pb"]
        raise ModelError(f"inference.model: folder {p} is not a DeepLabCut TensorFlow export: missing {' and '.join(what)}"
                         " (export one with deeplabcut.export_model, or give a DeepLabCut 3 .pt file)")
    if p.suffix == ".pt":
        return "pytorch"
    if p.suffix == ".pb":
        raise ModelError(f"inference.model: {p} is a bare .pb; give its export folder (with pose_cfg.yaml) instead")
    raise ModelError(f"inference.model: {p} is neither a DeepLabCut TensorFlow export folder nor a .pt file")


def weights_file(path: str | os.PathLike[str], engine: str) -> Path:
    """The file that holds the weights: the first *.pb of a folder (as dlclive picks it) or the .pt."""
    p = Path(path)
    if engine == "tensorflow":
        return sorted(p.glob("*.pb"))[0]
    if p.is_dir():
        return sorted(p.glob("*.pt"))[0]
    return p


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_pose_cfg(folder: Path) -> dict[str, Any]:
    import ruamel.yaml  # dlclive reads pose_cfg.yaml with ruamel too; no PyYAML dependency

    f = folder / "pose_cfg.yaml"
    try:
        cfg = ruamel.yaml.YAML(typ="safe", pure=True).load(f.read_text())
    except (OSError, ruamel.yaml.YAMLError) as e:
        raise ModelError(f"{f}: cannot read pose_cfg.yaml: {e}") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{f}: expected a YAML mapping, got {type(cfg).__name__}")
    for key in ("all_joints_names", "stride"):
        if key not in cfg:
            raise ModelError(f"{f}: missing key {key!r} (dlclive needs it to decode the network output)")
    if cfg.get("location_refinement") and "locref_stdev" not in cfg:
        raise ModelError(f"{f}: location_refinement is true but locref_stdev is missing")
    return cfg


def _check_tf_graph(pb: Path) -> tuple[str, str, str]:
    """Parse the frozen graph; (input, score map, locref) node names. Raises ModelError if unusable."""
    tf = _import_tf()
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(pb.read_bytes())
    except Exception as e:  # protobuf raises DecodeError and friends
        raise ModelError(f"{pb}: not a TensorFlow frozen graph (corrupt or truncated?): {e}") from None
    nodes = list(graph_def.node)
    if len(nodes) < 3:
        raise ModelError(f"{pb}: frozen graph has {len(nodes)} node(s); not a DeepLabCut export")
    if nodes[0].op != "Placeholder":
        raise ModelError(f"{pb}: first node is {nodes[0].name!r} ({nodes[0].op}); dlclive reads the first node as the "
                         "image input and expects a Placeholder")
    last, second = nodes[-1], nodes[-2]
    if "concat_1" in last.name:
        return nodes[0].name, last.name, ""
    if last.op != "Sigmoid":
        raise ModelError(f"{pb}: last node is {last.name!r} ({last.op}); dlclive reads the last node as the score map "
                         "and expects a Sigmoid (or a TFGPUinference 'concat_1' output)")
    return nodes[0].name, last.name, second.name


def _torch_load(pt: Path, device: str = "cpu") -> dict[str, Any]:
    torch = _import_torch(device)
    try:
        raw = torch.load(pt, map_location="cpu", weights_only=True)
    except Exception as e:  # zip/pickle errors of many kinds
        raise ModelError(f"{pt}: cannot load as a PyTorch file (corrupt or not a DeepLabCut 3 export?): {e}") from None
    if not isinstance(raw, Mapping) or "config" not in raw or "pose" not in raw:
        keys = sorted(raw) if isinstance(raw, Mapping) else type(raw).__name__
        raise ModelError(f"{pt}: expected a DeepLabCut 3 export {{'config', 'pose', ...}}, found {keys}")
    cfg = raw["config"]
    for key_path in (("method",), ("model",), ("data", "inference"), ("metadata", "bodyparts")):
        node: Any = cfg
        for k in key_path:
            if not isinstance(node, Mapping) or k not in node:
                raise ModelError(f"{pt}: config is missing {'.'.join(key_path)} (not a DeepLabCut 3 export)")
            node = node[k]
    return dict(raw)


def _torch_stride(cfg: Mapping[str, Any]) -> float | None:
    try:
        backbone = float(cfg["model"]["backbone"].get("output_stride", 32))
        head = cfg["model"]["heads"]["bodypart"]
        up = 1
        for s in head.get("heatmap_config", {}).get("strides", []):
            up *= s
        return backbone / up
    except (KeyError, TypeError, AttributeError):
        return None


def map_keypoints(bodyparts: Sequence[str], keypoints: Sequence[str], keypoint_map: Mapping[str, str],
                  where: str) -> tuple[int, ...]:
    """For each pipeline keypoint, the index of the model bodypart that provides it.

    `keypoint_map` maps model bodypart -> pipeline keypoint; bodyparts not in the map keep their name.
    Model bodyparts that map to no pipeline keypoint are ignored. Raises ModelError when a map key is
    not a model bodypart, two bodyparts claim one keypoint, or a pipeline keypoint has no source.
    """
    unknown = [b for b in keypoint_map if b not in bodyparts]
    if unknown:
        raise ModelError(f"{where}: inference.keypoint_map names {unknown}, which the model does not have; "
                         f"model bodyparts are {list(bodyparts)}")
    source: dict[str, int] = {}
    for i, b in enumerate(bodyparts):
        name = keypoint_map.get(b, b)
        if name in source:
            raise ModelError(f"{where}: model bodyparts {bodyparts[source[name]]!r} and {b!r} both map to keypoint "
                             f"{name!r}; fix inference.keypoint_map")
        source[name] = i
    missing = [k for k in keypoints if k not in source]
    if missing:
        raise ModelError(f"{where}: the model does not provide keypoints {missing}. Model bodyparts are "
                         f"{list(bodyparts)}; map them onto the rig keypoints with [inference.keypoint_map] "
                         f"(model bodypart = rig keypoint) or change the rig's keypoints")
    return tuple(source[k] for k in keypoints)


def check_model(cfg: InferenceConfig, keypoints: Sequence[str]) -> ModelInfo:
    """Open and validate the configured model without running it; call before any camera starts.

    Args:
        cfg: the [inference] section (model path already resolved against the config file).
        keypoints: the rig's keypoint names the worker must publish.

    Returns:
        ModelInfo (path, engine, sha256, bodyparts, keypoint mapping).

    Raises:
        ModelError naming the file and what was expected, for a missing, corrupt or wrong-engine model
        or keypoints that the model does not provide.
    """
    if cfg.engine in BROKEN_ENGINES:
        raise ModelError(f"inference.engine = {cfg.engine!r}: {BROKEN_ENGINES[cfg.engine]}")
    engine = detect_engine(cfg.model)
    if cfg.engine != "auto" and cfg.engine != engine:
        raise ModelError(f"inference.engine = {cfg.engine!r} but {cfg.model} is a {engine} model "
                         f"({'export folder with a .pb' if engine == 'tensorflow' else '.pt file'}); set engine = "
                         f"\"{engine}\" or \"auto\"")
    path = Path(cfg.model).resolve()
    wfile = weights_file(path, engine)
    if engine == "tensorflow":
        pose_cfg = _read_pose_cfg(path)
        _check_tf_graph(wfile)
        bodyparts = tuple(str(b) for b in _flatten_names(pose_cfg["all_joints_names"]))
        stride: float | None = float(pose_cfg["stride"])
        can_batch = int(pose_cfg.get("num_outputs", 1) or 1) == 1
        _check_tf_graph_runs(wfile)
    else:
        raw = _torch_load(wfile, cfg.device)
        tcfg = raw["config"]
        bodyparts = tuple(str(b) for b in tcfg["metadata"]["bodyparts"])
        stride = _torch_stride(tcfg)
        _check_torch_builds(wfile, raw, cfg.device)
        can_batch = (tcfg.get("method", "bu") == "bu" and raw.get("detector") is None
                     and "bodypart" in tcfg["model"].get("heads", {})
                     and len(tcfg["metadata"].get("individuals", ["single"]) or ["single"]) <= 1)
    if not bodyparts:
        raise ModelError(f"{wfile}: the model lists no bodyparts")
    index = map_keypoints(bodyparts, keypoints, cfg.keypoint_map, str(path))
    return ModelInfo(path=str(path), engine=engine, sha256=sha256_file(wfile), bodyparts=bodyparts,
                     keypoints=tuple(keypoints), keypoint_index=index, stride=stride, can_batch=can_batch)


def _flatten_names(names: Any) -> list[str]:
    # DeepLabCut writes all_joints_names as a flat list; very old exports nest one level.
    out: list[str] = []
    for n in names:
        out.extend(_flatten_names(n) if isinstance(n, (list, tuple)) else [n])
    return out


def _check_tf_graph_runs(pb: Path) -> None:
    """Import the graph into a fresh tf.Graph (catches graphs that parse but do not import)."""
    tf = _import_tf()
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(pb.read_bytes())
    try:
        with tf.Graph().as_default():
            tf.compat.v1.import_graph_def(graph_def, name="DLC")
    except Exception as e:
        raise ModelError(f"{pb}: frozen graph does not import into TensorFlow {tf.__version__}: {e}") from None


def _check_torch_builds(pt: Path, raw: Mapping[str, Any], device: str = "cpu") -> None:
    import_dlclive(device)
    try:
        from dlclive.pose_estimation_pytorch import models
    except ImportError as e:
        raise ModelError(f"{pt}: dlclive's PyTorch engine cannot be imported (torch/torchvision/timm): {e}") from None
    import copy

    try:
        model = models.PoseModel.build(copy.deepcopy(raw["config"]["model"]))
        model.load_state_dict(raw["pose"])
    except Exception as e:
        raise ModelError(f"{pt}: dlclive cannot build this model from its config or load its weights: {e}") from None


# --------------------------------------------------------------------------------------------------
# Running a model


class PoseEstimator(Protocol):
    """Runs a model on frames of named cameras; one (J, 3) x, y, likelihood array per frame."""

    batched: bool

    def infer(self, cameras: Sequence[str], frames: Sequence[np.ndarray]) -> list[np.ndarray]: ...

    def close(self) -> None: ...


def _tf_session_config(threads: int) -> Any:
    tf = _import_tf()
    return tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1)


class DLCLiveEstimator:
    """One `dlclive.DLCLive` per camera (dynamic cropping keeps per-camera state); one call per frame."""

    batched = False

    def __init__(self, info: ModelInfo, cfg: InferenceConfig, cameras: Sequence[str]) -> None:
        dlclive = import_dlclive(cfg.device if info.engine == "pytorch" else "cpu")
        kwargs: dict[str, Any] = {
            "cropping": list(cfg.cropping) if cfg.cropping else None,
            "dynamic": (bool(cfg.dynamic), float(cfg.dynamic_threshold), int(cfg.dynamic_margin)),
            "resize": float(cfg.resize),
        }
        if info.engine == "tensorflow":
            kwargs.update(model_type="base", tf_config=_tf_session_config(cfg.threads))
        else:
            _import_torch(cfg.device).set_num_threads(cfg.threads)
            kwargs.update(model_type="pytorch", device=cfg.device)
        self._live = {cam: dlclive.DLCLive(info.path, **kwargs) for cam in cameras}

    def infer(self, cameras: Sequence[str], frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for cam, frame in zip(cameras, frames):
            live = self._live[cam]
            pose = live.get_pose(frame) if live.is_initialized else live.init_inference(frame)
            out.append(np.array(pose, dtype=np.float64, copy=True))
        return out

    def close(self) -> None:
        for live in self._live.values():
            live.close()


class FramePrep:
    """Per-camera frame preparation and pose mapping, identical to DLCLive.process_frame /
    _post_process_pose (static crop, dynamic crop around the previous pose, cv2.resize, BGR->RGB)."""

    def __init__(self, cfg: InferenceConfig) -> None:
        self.cropping = list(cfg.cropping) if cfg.cropping else None
        self.dynamic = (bool(cfg.dynamic), float(cfg.dynamic_threshold), int(cfg.dynamic_margin))
        self.resize = float(cfg.resize)
        self.pose: np.ndarray | None = None
        self.dynamic_cropping: list[int] | None = None

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) BGR or (H, W) mono uint8 -> (h, w, 3) RGB network input."""
        import cv2

        if self.cropping:
            c = self.cropping
            frame = frame[c[2]:c[3], c[0]:c[1]]
        if self.dynamic[0] and self.pose is not None:
            detected = self.pose[:, 2] >= self.dynamic[1]
            if np.any(detected):
                h, w = frame.shape[0], frame.shape[1]
                x, y = self.pose[detected, 0], self.pose[detected, 1]
                m = self.dynamic[2]
                x1, x2 = max(0, int(np.min(x)) - m), min(w, int(np.max(x)) + m)
                y1, y2 = max(0, int(np.min(y)) - m), min(h, int(np.max(y)) + m)
                self.dynamic_cropping = [x1, x2, y1, y2]
                frame = frame[y1:y2, x1:x2]
            else:
                self.dynamic_cropping = None
        if self.resize != 1:
            frame = cv2.resize(frame, (int(frame.shape[1] * self.resize), int(frame.shape[0] * self.resize)))
        if frame.ndim == 2:
            return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def finish(self, pose: np.ndarray) -> np.ndarray:
        """(J, 3) pose in network-input pixels -> (J, 3) full-frame pixels; remembers it for cropping."""
        pose = np.array(pose, dtype=np.float64, copy=True)
        pose[:, :2] *= 1 / self.resize
        if self.cropping is not None:
            pose[:, 0] += self.cropping[0]
            pose[:, 1] += self.cropping[2]
        if self.dynamic_cropping is not None:
            pose[:, 0] += self.dynamic_cropping[0]
            pose[:, 1] += self.dynamic_cropping[2]
        self.pose = pose
        return pose.copy()


def _same_shape_groups(images: Sequence[np.ndarray]) -> list[list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape), []).append(i)
    return list(groups.values())


def infer_batched(prep: Mapping[str, FramePrep], run_batch: Any, cameras: Sequence[str],
                  frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """One forward pass per group of same-shape prepared frames -> (J, 3) full-frame pose per camera."""
    images = [prep[c].prepare(f) for c, f in zip(cameras, frames)]
    poses: list[np.ndarray | None] = [None] * len(images)
    for group in _same_shape_groups(images):
        batch = run_batch(np.stack([images[i] for i in group]))
        for k, i in enumerate(group):
            poses[i] = prep[cameras[i]].finish(batch[k])
    return poses  # type: ignore[return-value]


def decode_scoremap(scmap: np.ndarray, locref: np.ndarray | None, stride: float, locref_stdev: float) -> np.ndarray:
    """DLC decoding, batched. (B, h, w, J) score map + (B, h, w, 2J) offsets -> (B, J, 3) x, y, p.

    Position = argmax cell * stride + stride / 2 + offset * locref_stdev, offsets interleaved (dx, dy)
    per joint, exactly as dlclive's `argmax_pose_predict`.
    """
    b, h, w, j = scmap.shape
    flat = scmap.reshape(b, h * w, j)
    idx = np.argmax(flat, axis=1)  # (B, J)
    cy, cx = np.divmod(idx, w)
    bi = np.arange(b)[:, None]
    ji = np.arange(j)[None, :]
    score = flat[bi, idx, ji]
    x = cx.astype(np.float64) * stride + 0.5 * stride
    y = cy.astype(np.float64) * stride + 0.5 * stride
    if locref is not None:
        off = locref.reshape(b, h, w, j, 2)[bi, cy, cx, ji].astype(np.float64) * locref_stdev  # (B, J, 2) dx, dy
        x = x + off[..., 0]
        y = y + off[..., 1]
    return np.stack([x, y, score.astype(np.float64)], axis=-1)


class TFBatchEstimator:
    """The TensorFlow export's frozen graph in our own tf.compat.v1 session, fed a batch of frames."""

    batched = True

    def __init__(self, info: ModelInfo, cfg: InferenceConfig, cameras: Sequence[str]) -> None:
        tf = _import_tf()
        folder = Path(info.path)
        self._pose_cfg = _read_pose_cfg(folder)
        pb = weights_file(folder, "tensorflow")
        in_name, score_name, locref_name = _check_tf_graph(pb)
        if not locref_name:
            raise ModelError(f"{pb}: exported with TFGPUinference (graph outputs poses, batch 1 only); "
                             "batching needs a score-map export, set inference.batch = false")
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(pb.read_bytes())
        graph = tf.Graph()
        with graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="DLC")
        graph.finalize()
        self._sess = tf.compat.v1.Session(graph=graph, config=_tf_session_config(cfg.threads))
        self._input = graph.get_tensor_by_name(f"DLC/{in_name}:0")
        self._outputs = [graph.get_tensor_by_name(f"DLC/{score_name}:0")]
        self._use_locref = bool(self._pose_cfg.get("location_refinement", False))
        if self._use_locref:
            self._outputs.append(graph.get_tensor_by_name(f"DLC/{locref_name}:0"))
        self._stride = float(self._pose_cfg["stride"])
        self._locref_stdev = float(self._pose_cfg.get("locref_stdev", 1.0))
        self._prep = {cam: FramePrep(cfg) for cam in cameras}

    def run_batch(self, images: np.ndarray) -> np.ndarray:
        """(B, h, w, 3) RGB network inputs -> (B, J, 3) poses in network-input pixels."""
        out = self._sess.run(self._outputs, feed_dict={self._input: images.astype(np.float32)})
        locref = out[1] if self._use_locref else None
        return decode_scoremap(out[0], locref, self._stride, self._locref_stdev)

    def infer(self, cameras: Sequence[str], frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        return infer_batched(self._prep, self.run_batch, cameras, frames)

    def close(self) -> None:
        self._sess.close()


class TorchBatchEstimator:
    """The PyTorch export, built the way dlclive builds it, run on a stacked batch of frames."""

    batched = True

    def __init__(self, info: ModelInfo, cfg: InferenceConfig, cameras: Sequence[str]) -> None:
        import copy

        torch = _import_torch(cfg.device)
        import_dlclive(cfg.device)
        from dlclive.pose_estimation_pytorch import models
        from dlclive.pose_estimation_pytorch.data.image import AutoPadToDivisor
        from torchvision.transforms import v2

        torch.set_num_threads(cfg.threads)
        self._torch = torch
        raw = _torch_load(weights_file(info.path, "pytorch"), cfg.device)
        mcfg = raw["config"]
        self._device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        model = models.PoseModel.build(copy.deepcopy(mcfg["model"]))
        model.load_state_dict(raw["pose"])
        self._model = model.to(self._device).eval()
        transforms: list[Any] = [v2.ToDtype(torch.float32, scale=True)]
        pad = mcfg["data"]["inference"].get("auto_padding")
        if pad:
            transforms.append(AutoPadToDivisor(pad_height_divisor=pad.get("pad_height_divisor", 1),
                                               pad_width_divisor=pad.get("pad_width_divisor", 1)))
        if mcfg["data"]["inference"].get("normalize_images", False):
            transforms.append(v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]))
        self._transform = v2.Compose(transforms)
        self._prep = {cam: FramePrep(cfg) for cam in cameras}

    def run_batch(self, images: np.ndarray) -> np.ndarray:
        """(B, h, w, 3) RGB network inputs -> (B, J, 3) poses in network-input pixels."""
        torch = self._torch
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
            t = self._transform(t).to(self._device)  # ToDtype, AutoPadToDivisor, Normalize all take (N, C, H, W)
            outputs = self._model(t)
            poses = self._model.get_predictions(outputs)["bodypart"]["poses"]  # (B, 1, J, 3)
        return poses[:, 0].cpu().numpy().astype(np.float64)

    def infer(self, cameras: Sequence[str], frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        return infer_batched(self._prep, self.run_batch, cameras, frames)

    def close(self) -> None:
        pass


def build_estimator(info: ModelInfo, cfg: InferenceConfig, cameras: Sequence[str],
                    batch: bool | None = None) -> PoseEstimator:
    """The estimator a worker uses for its cameras.

    Batched (one forward pass per moment) when `batch` (default: cfg.batch) is set, the worker serves
    more than one camera and the model allows it; otherwise dlclive's DLCLive, one call per frame.
    """
    want_batch = cfg.batch if batch is None else batch
    if want_batch and info.can_batch and len(cameras) > 1:
        if info.engine == "tensorflow":
            return TFBatchEstimator(info, cfg, cameras)
        return TorchBatchEstimator(info, cfg, cameras)
    return DLCLiveEstimator(info, cfg, cameras)


def to_pipeline(pose: np.ndarray, info: ModelInfo) -> np.ndarray:
    """(J, 3) model output -> (K, 3) float32 in the rig's keypoint order (x px, y px, likelihood)."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.ndim != 2 or pose.shape[1] < 3 or pose.shape[0] != len(info.bodyparts):
        out = np.full((len(info.keypoints), 3), np.nan, dtype=np.float32)
        out[:, 2] = 0.0
        return out
    return pose[list(info.keypoint_index), :3].astype(np.float32)
