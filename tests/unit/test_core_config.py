"""Config loading: defaults, units, errors that name the key (config.py)."""

from pathlib import Path

import pytest

from mailpolicy import config


def test_defaults_keep_everything_under_var(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config.from_dict({})
    assert cfg.admin_socket == tmp_path / "var" / "admin.sock"
    assert cfg.maildir_root == tmp_path / "var" / "mail"
    assert cfg.store_url == f"sqlite+aiosqlite:///{tmp_path / 'var' / 'mailpolicy.db'}"
    for hostport in (cfg.listen.policy, cfg.listen.socketmap, cfg.listen.filter, cfg.listen.lmtp):
        assert hostport.startswith("127.0.0.1:")


@pytest.mark.parametrize(("text", "size"), [("100M", 104857600), ("2G", 2 * 1024**3),
                                            ("1024", 1024), ("10k", 10240), (5, 5)])
def test_sizes_use_binary_units(text, size):
    assert config.parse_size(text) == size


def test_format_size_round_trips():
    for n in (104857600, 2 * 1024**3, 1000, 1536 * 1024):
        assert config.parse_size(config.format_size(n)) == n
    assert config.format_size(None) == "unlimited"


@pytest.mark.parametrize(("data", "key"), [
    ({"bogus": {}}, "bogus"),
    ({"listen": {"nope": "1"}}, "listen.nope"),
    ({"listen": {"policy": "nohost"}}, "listen.policy"),
    ({"listen": {"policy": 10040}}, "listen.policy"),
    ({"limits": {"message_size_limit": "10Q"}}, "limits.message_size_limit"),
    ({"filter": {"mode": "sideways"}}, "filter.mode"),
    ({"outbound": {"ip_pool": ["300.1.1.1"]}}, "outbound.ip_pool[0]"),
    ({"autoreply": {"timezone": "Mars/Olympus"}}, "autoreply.timezone"),
    ({"dns": {"nameservers": ["127.0.0.1:notaport"]}}, "dns.nameservers[0]"),
])
def test_errors_name_the_key(data, key):
    with pytest.raises(config.ConfigError) as e:
        config.from_dict(data)
    assert str(e.value).startswith(key + ":")


def test_config_file_with_only_dns_keeps_other_defaults(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text('[dns]\nnameservers = ["127.0.0.1:5353"]\n')
    cfg = config.load(f)
    assert cfg.dns.nameservers == ("127.0.0.1:5353",)
    assert cfg.listen == config.Listen()


def test_unreadable_or_broken_file_is_a_config_error(tmp_path):
    with pytest.raises(config.ConfigError):
        config.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[listen\n")
    with pytest.raises(config.ConfigError):
        config.load(bad)


def test_shipped_example_config_loads_and_equals_defaults(monkeypatch):
    example = Path(__file__).parents[2] / "config" / "mailpolicy.toml"
    cfg = config.load(example)
    assert cfg == config.from_dict({}, base_dir=cfg.base_dir)


def test_shipped_example_config_names_every_key():
    import tomllib

    import msgspec

    example = tomllib.loads((Path(__file__).parents[2] / "config" / "mailpolicy.toml").read_text())

    def walk(struct_type, data, prefix):
        for f in msgspec.structs.fields(struct_type):
            if f.name == "base_dir":
                continue
            assert f.name in data, f"config/mailpolicy.toml lacks {prefix}{f.name}"
            sub = f.type
            if isinstance(sub, type) and issubclass(sub, msgspec.Struct):
                walk(sub, data[f.name], f"{prefix}{f.name}.")

    walk(config.Config, example, "")
