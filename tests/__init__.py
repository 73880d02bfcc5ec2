"""Test suite (a regular package: sleap-io installs a top-level `tests` package into site-packages)."""
