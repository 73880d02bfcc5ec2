"""Behaviour from 3D: window features, unsupervised segmentation and dyskinesia proxies.

Modules: `features` (one batched kernel over sliding windows, live and offline), `segment`
(a Gaussian HMM from hmmlearn, filtered causally so the live stage and the offline run agree),
`proxies` (dyskinesia proxies per body region and side, episode detection, 20-minute bins),
`process` (the live stage: pose3d in, ``behaviour/<name>`` out), `cli` (``python -m
analysis.behaviour``: offline run and fitting). The proxies are measures from 3D for raters to
compare with their AIMs scores; they are not AIMs scores (see README.md).
"""
