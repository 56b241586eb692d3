from __future__ import annotations

from pathlib import Path

import pytest

from guichet.config import ConfigError, Secret, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "guichet.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_bind_to_loopback() -> None:
    settings = load_settings(None)
    assert settings.agi.host == "127.0.0.1"
    assert settings.ami.host == "127.0.0.1"


def test_file_overrides_defaults_and_ints_become_floats(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, '[agi]\nport = 4600\nenv_timeout_s = 2\n[ami]\nusername = "eng"\n')
    )
    assert settings.agi.port == 4600
    assert settings.agi.env_timeout_s == 2.0
    assert settings.ami.username == "eng"
    assert settings.ami.port == 5038


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[agi]\nprot = 1\n", "[agi]: unknown key(s) prot"),
        ("[agi]\nport = 70000\n", "[agi] port: 70000 is not a TCP port"),
        ('[agi]\nport = "4573"\n', "[agi] port: expected int"),
        ("[ami]\nusername = 3\n", "[ami] username: expected str"),
        ("[agi]\nsession_timeout_s = 0\n", "session_timeout_s: must be a positive"),
        ("[web]\nport = 1\n", "unknown section(s) web"),
        ('loop = "trio"\n', "loop: expected 'uvloop' or 'asyncio'"),
        ("[agi\n", "invalid TOML"),
        ("agi = 3\n", "[agi]: expected a table"),
    ],
)
def test_wrong_config_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_secret_from_env_is_never_shown() -> None:
    secret = load_settings(None).ami_secret({"GUICHET_AMI_SECRET": "s3cr3t"})
    assert secret.value == "s3cr3t"
    assert "s3cr3t" not in repr(secret)
    assert "s3cr3t" not in str(secret)
    assert "s3cr3t" not in repr(Secret("s3cr3t"))


def test_secret_from_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "ami.secret"
    secret_file.write_text("from-file\n", encoding="utf-8")
    settings = load_settings(write(tmp_path, f'[ami]\nsecret_file = "{secret_file}"\n'))
    assert settings.ami_secret({}).value == "from-file"


def test_missing_secret_fails_with_the_variable_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GUICHET_AMI_SECRET"):
        load_settings(None).ami_secret({})
    settings = load_settings(write(tmp_path, f'[ami]\nsecret_file = "{tmp_path / "nope"}"\n'))
    with pytest.raises(ConfigError, match="secret_file: cannot read"):
        settings.ami_secret({})
