"""The log projected into PostgreSQL (psycopg 3): the schema and its migrations, writing
synced records exactly once, the projections the core fold maintains from them, and
the queries the readers run with ``--db``.

Beside the bus, below the readers and the sync follower (:mod:`convlog.sync`): it reads
no log directory and talks to no ZeroMQ socket; the follower hands it records.
"""
