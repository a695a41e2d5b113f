"""The log on disk: segments and reading them (:mod:`.segment`), the segment writer
(:mod:`.writer`), recovery (:mod:`.recovery`), ``state.json`` (:mod:`.state`), the writer
lock (:mod:`.lock`) and fsync (:mod:`.fsync`), all re-exported by :mod:`.log`;
checkpoints, replay (the fold run over the log), the search index (:mod:`.search_index`)
and its queries (:mod:`.search`), import of other formats, verification, purging a
session (:mod:`.purge`) and Ed25519 signing keys (:mod:`.signing`). Everything
that reads or writes files under the log directory, and nothing that talks to a socket.
"""
