"""`ratrig synth session OUT --duration S`: write a synthetic session folder (see synthetic.session)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from synthetic.rat import Lesion
from synthetic.render import NoiseOptions
from synthetic.rig import Corridor
from synthetic.session import write_session


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ratrig synth session",
                                description="Write a synthetic 4-camera session with exact ground truth.")
    p.add_argument("out", help="output folder (created)")
    p.add_argument("--duration", type=float, required=True, help="session length, s")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate (default 30)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--opaque-walls", action="store_true", help="opaque corridor walls (default clear)")
    p.add_argument("--lesion-side", choices=("left", "right"), help="shorten this side's stride")
    p.add_argument("--lesion-factor", type=float, default=0.8,
                   help="stride length factor on the lesioned side (default 0.8)")
    p.add_argument("--noise", type=float, default=0.0, help="sensor noise std, grey levels (default 0)")
    p.add_argument("--blur", type=float, default=0.0, help="Gaussian blur sigma, px (default 0)")
    p.add_argument("--codec", choices=("ffv1", "mjpg"), default="ffv1",
                   help="ffv1: lossless, large (default); mjpg: small, lossy")
    p.add_argument("--exposure-jitter", type=float, default=0.0, help="relative exposure std (default 0)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.duration > 0:
        print(f"error: --duration must be > 0 s, got {args.duration}", file=sys.stderr)
        return 2
    if not args.fps > 0:
        print(f"error: --fps must be > 0, got {args.fps}", file=sys.stderr)
        return 2
    try:
        lesion = Lesion(args.lesion_side, args.lesion_factor) if args.lesion_side else None
        noise = NoiseOptions(args.noise, args.blur, args.exposure_jitter)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    manifest = write_session(args.out, args.duration, args.fps, args.seed,
                             corridor=Corridor(clear_walls=not args.opaque_walls), lesion=lesion, noise=noise, codec=args.codec)
    print(f"wrote {manifest['n_frames']} frames x {len(manifest['camera_names'])} cameras to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
