"""The pure core: the record format, wire decoding, enrichment, the per-message ingest
step, the fold, gap logic, message views and what a purge keeps of a record.

Nothing here does I/O, reads a clock or imports zmq, os, time or sqlite3 (an
import-linter contract in ``pyproject.toml`` checks it): every function maps values
to values, so the fold's laws and the decoders are tested with hypothesis alone.
"""
