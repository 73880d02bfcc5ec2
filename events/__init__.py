"""Events stage: paw placement detection, rule triggers and output plugins.

Modules: `paw` (online touchdown / lift-off detector), `rules` (tiny trigger language), `outputs`
(serial TTL, UDP, ZeroMQ and Python plugins, each isolated in its own thread), `accuracy` (scoring
against exact contact times), `process` (the events process, `main(argv)`), `arduino/` (the TTL sketch).
"""
