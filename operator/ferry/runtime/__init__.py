"""The reconcile runtime every kind shares: caches fed by kopf, a keyed work queue, worker slots and the I/O.

Each kind contributes a pure decision (what it observes in, a Plan out); the runtime gathers the observed
state from its in-memory caches, calls the decision and carries the Plan out against the API.
"""
