"""``convlog sync``: the follower that reads a log from the position the database
acknowledged and writes its records into PostgreSQL (:mod:`convlog.db`), exactly once,
then keeps the projections current. A process of its own, never in the recorder's
hot path.
"""
