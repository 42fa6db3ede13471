"""kube-apiserver rules for the e2e emulator: what the API server does to the objects it stores.

Each module models one rule and names the Kubernetes documentation page or source it follows, using the keys of
/work/shared/reference/kube-apiserver-semantics.md (Q quantities, CD/AD/HD/BD defaults, SSA server-side apply,
VAL/UV validation, GC garbage collection).
"""
