"""The log on disk: segments, the writer, readers and recovery (:mod:`.log`),
checkpoints, replay (the fold run over the log), the search index, import of other
formats and verification. Everything that reads or writes files under the log
directory, and nothing that talks to a socket.
"""
