"""The pure core, split along its seams: `facade.Core` is what the runtime calls;
behind it, parts sharing one `context.CoreContext` (the state and the desired-state
version pinned for the call): route derivation (`routing`), announcing routes to
agents and exports to other replicas (`announce`, `replicas`), connection setup and
teardown (`decisions`, `flows`, `setup`), the connection log's events (`connlog`),
reconciliation with the switches (`reconcile`), desired-state changes (`changes`)
and read-only views (`views`).
Imports the rest of `controller.datapath` and `controller.desired`, nothing else.
"""
