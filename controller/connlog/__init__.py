"""The connection log (docs/architecture.md, "Connection log"): every decision the
core takes on a first packet, every revocation and expiry, kept in a bounded
in-memory ring (by count and age) that GET /api/v1/connections reads, and written
as JSON lines for log shippers.  Denied floods are summarised: one entry per pair
and interval, with a count.

`log` holds the ring, the flood summaries and the queries; `writer` the JSON-lines
file.  Imports only the core's event values (controller.datapath.connections) and
the policy's protocol names; the runtime hands it the events, the API reads it.
"""
