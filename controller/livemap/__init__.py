"""The live map (docs/architecture.md, "Live map"): a page served at /map that draws
sites, hosts, containers and their live connections, and the API it reads.

`view` builds one bounded, aggregated picture from the desired state, the live
routes and the recent denials (pure: no I/O); `feed` follows the changes for one
browser (the event stream); `routes` holds the FastAPI routers (the page, GET
/map/view, GET /map/events, GET /map/containers/{name}); `static/` the page itself
(plain SVG and hand-written JavaScript: no CDN, no Node on the hosts).

May import the API's plumbing (controller.api), the desired state and the
connection log; never the OpenFlow app, the switch layer or the host side.
"""
