"""Configuration: file < environment < flags, and errors that name file, line, key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO
from convlog.recorder.config import Config, ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "convlog.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    """With nothing given, the documented defaults apply."""
    config = load_config(env={})
    assert config == Config()
    assert config.sub == ("tcp://127.0.0.1:5556",) and config.fsync == "interval"
    assert config.rcvhwm >= 1_000_000 and config.segment_bytes == 64 * 1024 * 1024


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    """The environment overrides the file and flags override both."""
    path = write(tmp_path, '[recorder]\nfsync = "never"\nrcvhwm = 5\nsub = ["tcp://127.0.0.1:1"]\n')
    assert load_config(path, env={}).fsync == "never"
    config = load_config(path, env={"CONVLOG_FSYNC": "always", "CONVLOG_RCVHWM": "7"})
    assert (config.fsync, config.rcvhwm, config.sub) == ("always", 7, ("tcp://127.0.0.1:1",))
    config = load_config(path, env={"CONVLOG_FSYNC": "always"}, overrides={"fsync": "interval", "rcvhwm": None})
    assert (config.fsync, config.rcvhwm) == ("interval", 5)
    assert load_config(env={"CONVLOG_CONFIG": str(path)}).fsync == "never"
    assert load_config(env={"CONVLOG_SUB": "tcp://a:1,tcp://b:2"}).sub == ("tcp://a:1", "tcp://b:2")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[recorder]\nfsync = "sometimes"\n', ":2: recorder.fsync: must be one of always, interval, never"),
        ('[recorder]\n\nrcvhwm = -1\n', ":3: recorder.rcvhwm: must be a positive integer"),
        ('[recorder]\nsub = ["localhost:5556"]\n', ":2: recorder.sub: not a ZeroMQ endpoint"),
        ('[recorder]\nfsynk = "always"\n', ":2: recorder.fsynk: unknown key"),
        ('[recorder\nfsync = 1\n', ":1: syntax:"),
        ('[enrich]\nword_count = "maybe"\n', ":2: enrich.word_count: must be true or false"),
        ('[[enrich.rules]]\ntag = "x"\n\n[[enrich.rules]]\nregex = "("\ntag = "y"\n',
         ":4: enrich.rules[2]: invalid regex"),
        ('[[enrich.rules]]\nkeywords = ["a"]\n', ":1: enrich.rules[1]: give 'tag' or 'field'"),
        ('[[enrich.rules]]\nkeywords = ["a"]\nfield = "sha256"\nvalue = 1\n', "field 'sha256' is reserved"),
        ('[[enrich.rules]]\nkeywords = ["a"]\ncolour = "red"\ntag = "t"\n', ":3: enrich.rules[1].colour: unknown key"),
        ('[nonsense]\na = 1\n', "nonsense: unknown table"),
        ('[recorder]\nprocessing_nice = 20\n', ":2: recorder.processing_nice: must be an integer from 0 to 19"),
        ('[recorder]\nheld_bytes = 0\n', ":2: recorder.held_bytes: must be a positive integer"),
        ('[recorder]\ncheckpoint_keep = "many"\n', ":2: recorder.checkpoint_keep: must be a positive integer"),
    ],
)
def test_invalid_file_names_file_line_key_reason(tmp_path: Path, text: str, expected: str) -> None:
    """Every invalid value stops loading with the file, the line, the key and the reason."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(str(path))
    assert expected in message, message


def test_invalid_environment_and_flags_are_named() -> None:
    """Bad environment variables and flags are named in the error."""
    with pytest.raises(ConfigError, match="CONVLOG_FSYNC: must be one of"):
        load_config(env={"CONVLOG_FSYNC": "sometimes"})
    with pytest.raises(ConfigError, match="--sub: not a ZeroMQ endpoint"):
        load_config(env={}, overrides={"sub": ("nowhere",)})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config file that cannot be read is reported as such."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml", env={})


def test_shipped_shearwater_example_loads() -> None:
    """examples/shearwater.toml is valid and expresses chain_type, ace_tier and shl_tags."""
    config = load_config(REPO / "examples" / "shearwater.toml", env={})
    fields = {r.set_field for r in config.rules} | {r.tags_field for r in config.rules if r.tag}
    assert {"chain_type", "ace_tier", "shl_tags"} <= fields
    assert config.pull == "tcp://127.0.0.1:5557"
    config.enricher()


def test_readme_config_example_is_valid(tmp_path: Path) -> None:
    """The configuration example in docs/configuration.md (the reference moved out of the
    README) loads as it stands."""
    readme = (REPO / "docs" / "configuration.md").read_text()
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "readme.toml"
    path.write_text(block)
    config = load_config(path, env={})
    assert config.checkpoint_keep == 12 and config.fsync == "interval" and config.rules
