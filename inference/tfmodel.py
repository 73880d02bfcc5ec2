"""A small fully-convolutional pose network and its export in DeepLabCut's TensorFlow format.

The network (about 0.55 M parameters) runs on RGB 0-255 images (the scaling is inside the graph) and
outputs, at output stride 8, a score map (sigmoid) and location-refinement offsets interleaved (dx, dy)
per joint: the two outputs of a DeepLabCut ResNet export, decoded the same way by dlclive.

    image (H, W, 3) -> /2 16 -> /4 32 -> 32 -> /8 64 -> 64 [skip] -> /16 128 -> 128 -> 128
                    -> nearest x2 to the skip's size, concat skip -> 64 -> 1x1 score (J), 1x1 locref (2J)

`forward` is one function of a parameter dict, used by the training loop (eager, tf.Variables) and by
`export_dlc` (a tf.compat.v1 graph of constants), so the exported graph is the trained model.

`export_dlc` writes a folder dlclive loads with model_type="base": pose_cfg.yaml + a frozen graph whose
first node is the `Placeholder` input, second-to-last the locref `BiasAdd` and last the `Sigmoid`
(dlclive finds its inputs and outputs by position).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

STRIDE = 8
LOCREF_STDEV = 7.2801  # DeepLabCut's default; offsets are regressed in units of this many pixels

#: (name, kernel, in channels, out channels, stride); "fuse" takes the upsampled conv8 + the conv5 skip.
BODY: tuple[tuple[str, int, int, int, int], ...] = (
    ("conv1", 3, 3, 16, 2),
    ("conv2", 3, 16, 32, 2),
    ("conv3", 3, 32, 32, 1),
    ("conv4", 3, 32, 64, 2),
    ("conv5", 3, 64, 64, 1),
    ("conv6", 3, 64, 128, 2),
    ("conv7", 3, 128, 128, 1),
    ("conv8", 3, 128, 128, 1),
    ("fuse", 3, 128 + 64, 64, 1),
)
FEATURES = 64


def init_params(num_joints: int, seed: int = 0) -> dict[str, np.ndarray]:
    """He-initialised weights: {name/w: (k, k, in, out) float32, name/b: (out,) float32}."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for name, k, cin, cout, _ in BODY:
        params[f"{name}/w"] = (rng.standard_normal((k, k, cin, cout)) * np.sqrt(2.0 / (k * k * cin))).astype(np.float32)
        params[f"{name}/b"] = np.zeros(cout, np.float32)
    params["score/w"] = (rng.standard_normal((1, 1, FEATURES, num_joints)) * 0.01).astype(np.float32)
    # Start the score map near "nothing here" so early training is not swamped by false positives.
    params["score/b"] = np.full(num_joints, -4.0, np.float32)
    params["locref/w"] = (rng.standard_normal((1, 1, FEATURES, 2 * num_joints)) * 0.01).astype(np.float32)
    params["locref/b"] = np.zeros(2 * num_joints, np.float32)
    return params


def count_params(params: Mapping[str, Any]) -> int:
    return int(sum(np.prod(np.shape(v)) for v in params.values()))


def forward_body(tf: Any, x: Any, params: Mapping[str, Any]) -> Any:
    """(B, H, W, 3) float32 RGB 0-255 -> (B, ceil(H/8), ceil(W/8), 64) features."""
    h = x * (1.0 / 255.0)
    skip = None
    for name, _, _, _, stride in BODY[:-1]:
        h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(h, params[f"{name}/w"], stride, "SAME"), params[f"{name}/b"]))
        if name == "conv5":
            skip = h
    up = tf.compat.v1.image.resize_nearest_neighbor(h, tf.shape(skip)[1:3])
    h = tf.concat([up, skip], axis=3)
    return tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(h, params["fuse/w"], 1, "SAME"), params["fuse/b"]))


def forward(tf: Any, x: Any, params: Mapping[str, Any]) -> tuple[Any, Any]:
    """(B, H, W, 3) RGB 0-255 -> score logits (B, h, w, J), locref (B, h, w, 2J) in locref_stdev units."""
    feat = forward_body(tf, x, params)
    logits = tf.nn.bias_add(tf.nn.conv2d(feat, params["score/w"], 1, "VALID"), params["score/b"])
    locref = tf.nn.bias_add(tf.nn.conv2d(feat, params["locref/w"], 1, "VALID"), params["locref/b"])
    return logits, locref


def export_dlc(params: Mapping[str, np.ndarray], folder: str | os.PathLike[str], bodyparts: Sequence[str],
               extra_cfg: Mapping[str, Any] | None = None, pb_name: str = "snapshot-synthrat.pb") -> Path:
    """Write a DeepLabCut TensorFlow export folder (pose_cfg.yaml + frozen graph). Returns the .pb path.

    The graph is built from constants in a fixed creation order, so that dlclive's positional lookup
    finds Placeholder first, `pose/locref_pred/block4/BiasAdd` second-to-last and `Sigmoid` last; the
    order is asserted after writing.
    """
    import tensorflow as tf

    from ratrig.tomlio import atomic_write_bytes, atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    j = len(bodyparts)
    if params["score/b"].shape != (j,):
        raise ValueError(f"parameters have {params['score/b'].shape[0]} joints, bodyparts lists {j}")
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="Placeholder")
        consts = {k: tf.constant(v, name=k.replace("/", "_")) for k, v in params.items()
                  if not k.startswith(("score", "locref"))}
        feat = forward_body(tf, x, consts)
        with tf.name_scope("pose/part_pred/block4"):
            logits = tf.nn.bias_add(tf.nn.conv2d(feat, tf.constant(params["score/w"]), 1, "VALID"),
                                    tf.constant(params["score/b"]), name="BiasAdd")
        with tf.name_scope("pose/locref_pred/block4"):
            locref_w = tf.constant(params["locref/w"])
            locref_b = tf.constant(params["locref/b"])
            conv = tf.nn.conv2d(feat, locref_w, 1, "VALID")
            tf.nn.bias_add(conv, locref_b, name="BiasAdd")
        tf.math.sigmoid(logits, name="Sigmoid")
    graph_def = graph.as_graph_def()
    nodes = list(graph_def.node)
    if nodes[0].name != "Placeholder" or nodes[-1].name != "Sigmoid" or nodes[-2].name != "pose/locref_pred/block4/BiasAdd":
        raise RuntimeError(f"export node order is wrong: first {nodes[0].name}, last two {nodes[-2].name}, {nodes[-1].name}")
    pb = folder / pb_name
    atomic_write_bytes(pb, graph_def.SerializeToString())
    cfg: dict[str, Any] = {
        "all_joints": [[i] for i in range(j)],
        "all_joints_names": list(bodyparts),
        "num_joints": j,
        "stride": float(STRIDE),
        "location_refinement": True,
        "locref_stdev": float(LOCREF_STDEV),
        "net_type": "ratrig_fcn_s8",
        "dataset_type": "default",
        "batch_size": 1,
        "num_outputs": 1,
    }
    cfg.update(dict(extra_cfg or {}))
    atomic_write_text(folder / "pose_cfg.yaml", _yaml_dump(cfg))
    return pb


def _yaml_dump(cfg: Mapping[str, Any]) -> str:
    import io

    import ruamel.yaml

    buf = io.StringIO()
    y = ruamel.yaml.YAML(typ="safe", pure=True)
    y.default_flow_style = None
    y.dump(dict(cfg), buf)
    return buf.getvalue()
