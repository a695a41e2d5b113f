"""convlog serve: a read-only local web UI over the log (issue 15)."""
