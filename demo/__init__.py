"""`make demo`: the project's main job, end to end. Not part of the installed packages; run from a checkout.

`python -m demo` (the default) serves a real reranker on this machine and touches no cluster;
`python -m demo --cluster` installs into the current kubectl context, after saying what and where.
Arrows point down: the demo imports the server and the operator, never the reverse.
"""
