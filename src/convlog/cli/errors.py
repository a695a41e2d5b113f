"""The failures that are the user's to fix (:data:`EXPECTED`): the command line and the
menu turn them into one readable line instead of a traceback."""

from __future__ import annotations

import zmq

from convlog.bus.control import ControlError
from convlog.bus.curve import CurveError
from convlog.bus.publisher import NoSubscriberError, PublishFileError
from convlog.cli.demo import DemoError
from convlog.cli.session_control import SessionControlError
from convlog.cli.sharegpt import DatasetMissingError
from convlog.db.schema import DatabaseError, SchemaError
from convlog.recorder.config import ConfigError
from convlog.store.archive import ArchiveError
from convlog.store.checkpoint import CheckpointError
from convlog.store.identity import LogIdError
from convlog.store.lock import LogLockedError
from convlog.store.purge import PurgeError
from convlog.store.replay import NoLogError, UnknownSessionError
from convlog.store.retention import RetentionError
from convlog.store.signing import SigningKeyError
from convlog.sync.follower import SyncLockedError

#: Failures that are the user's to fix: one line, exit 1.
EXPECTED = (
    ConfigError,
    CheckpointError,
    LogLockedError,
    NoLogError,
    UnknownSessionError,
    NoSubscriberError,
    DemoError,
    DatasetMissingError,
    FileNotFoundError,
    PermissionError,
    PublishFileError,
    ControlError,
    SessionControlError,
    PurgeError,
    TimeoutError,
    RetentionError,
    ArchiveError,
    CurveError,
    SigningKeyError,
    SyncLockedError,
    SchemaError,
    DatabaseError,
    LogIdError,
    zmq.ZMQError,
)
