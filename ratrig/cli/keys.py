"""`ratrig keys`: make CurveZMQ key pairs for authenticated multi-host sessions.

    ratrig keys DIR NAME [NAME...]

writes DIR/NAME.key (public: give it to the hosts that must accept NAME) and DIR/NAME.key_secret
(mode 0600: stays on NAME's host). A rig needs one *server* pair (its secret on every host that
binds) and one *client* pair per host; `[network]` in the rig's config names them (README,
"Several hosts").
"""
from __future__ import annotations

import argparse
import re
import sys

from ratrig.security import KeyFileError, write_key_pair


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ratrig keys", description=__doc__.splitlines()[0])
    p.add_argument("folder", help="folder to write the key files into (created if missing)")
    p.add_argument("names", nargs="+", metavar="NAME", help="one key pair per name, e.g. server camera-pc gpu-box")
    args = p.parse_args(argv)
    for name in args.names:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            print(f"ratrig keys: {name!r}: expected letters, digits, '.', '_' or '-'", file=sys.stderr)
            return 2
    for name in args.names:
        try:
            public, secret = write_key_pair(args.folder, name)
        except (KeyFileError, OSError) as e:
            print(f"ratrig keys: {e}", file=sys.stderr)
            return 1
        print(f"{name}: public {public}  secret {secret} (0600, keep it on this host)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
