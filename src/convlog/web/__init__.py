"""``convlog serve``: a read-only local web UI over a log directory (or the PostgreSQL
store), with a JSON API behind every page (issue 15).

It sits between the command line and the readers: it reads through
:mod:`convlog.readers`, :mod:`convlog.store`, :mod:`convlog.db` and :mod:`convlog.bus`
and never writes to the log. Starlette serves it (through uvicorn), Jinja2 renders
the pages with autoescaping on (a recorded message is untrusted text), htmx (vendored
under ``static/vendor``, no CDN) swaps the filtered tables in place.

Modules: :mod:`.access` (the access token, the Host check, the methods allowed and the
security headers of every response), :mod:`.sources` (what the pages and the API
read: a log directory or the database, the same shapes as the CLI's ``--json``),
:mod:`.app` (the routes, pages and API), :mod:`.server` (running it with uvicorn),
:mod:`.tree` (a session's fork tree as SVG, for the session page), :mod:`.live`
(Live's server-sent events, from ``convlog tail -f``'s follower) and :mod:`.charts`
(the Usage and Health pages' figures and charts; Chart.js is vendored beside htmx).
"""
