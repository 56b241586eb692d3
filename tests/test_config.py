from __future__ import annotations

import re
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


def test_queues_and_agents_sections(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            '[state]\nbackend = "redis"\n[queues.apa]\nservice_level_s = 60\noverflow = "callback"\n'
            '[agents.a101]\nname = "Marie Durand"\nskills = ["apa", "accueil"]\n',
        )
    )
    assert settings.state.backend == "redis"
    assert settings.queues["apa"].service_level_s == 60.0
    assert settings.queues["apa"].overflow == "callback"
    assert settings.queues["pmi"].overflow == "general"  # every service queue has a policy
    assert set(settings.queues) == {"apa", "pmi", "mdph", "transport", "rsa", "accueil"}
    assert settings.agents["a101"].skills == ("apa", "accueil")
    assert load_settings(None).agents == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[state]\nbackend = "etcd"\n', "[state] backend: expected one of memory, redis"),
        ('[queues.apa]\noverflow = "voice"\n', "[queues.apa] overflow: expected one of general, callback"),
        ("[queues.cantine]\nwrapup_s = 3\n", "[queues]: unknown queue(s) cantine"),
        ('[agents.A1]\nskills = ["apa"]\n', "[agents.A1]: an agent id is"),
        ('[agents.a1]\nskills = ["cantine"]\n', "[agents.a1] skills: unknown queue(s) cantine"),
        ("[agents.a1]\nskills = []\n", "[agents.a1] skills: list at least one queue"),
        ("[agents.a1]\nskills = [1]\n", "[agents.a1] skills: expected a list of strings"),
        ("[routing]\naging_points = 0\n", "[routing] aging_points: must be at least 1"),
    ],
)
def test_wrong_routing_config_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(write(tmp_path, text))


def test_sip_secret_from_env_or_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "sip.secret"
    secret_file.write_text("fichier-secret\n", encoding="utf-8")
    settings = load_settings(
        write(
            tmp_path,
            f'[agents.a-1]\nskills = ["apa"]\n'
            f'[agents.b2]\nskills = ["pmi"]\nsip_secret_file = "{secret_file}"\n',
        )
    )
    assert settings.sip_secret("a-1", {"GUICHET_SIP_SECRET_A_1": "env-secret"}).value == "env-secret"
    assert settings.sip_secret("b2", {}).value == "fichier-secret"
    with pytest.raises(ConfigError, match="GUICHET_SIP_SECRET_A_1"):
        settings.sip_secret("a-1", {})
