"""`mailpolicy serve -c FILE` through the CLI, provisioned by the CLI over its admin socket."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

from test_admin_support import CLI, ENV


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp: Path) -> Path:
    listen = "\n".join(f'{n} = "127.0.0.1:{_free_port()}"'
                       for n in ("policy", "socketmap", "filter", "lmtp", "filter_originating"))
    conf = tmp / "mailpolicy.toml"
    conf.write_text(f'[listen]\n{listen}\n[paths]\nstate_dir = "{tmp / "state"}"\n'
                    '[outbound]\nip_pool = ["127.0.0.1"]\n'
                    '[filter]\nsrs_domain = "mx.example.test"\n')
    return conf


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, env=ENV,
                          timeout=30, check=False)


def test_serve_then_provision_with_the_cli(tmp_path: Path) -> None:
    conf = _config(tmp_path)
    sock = tmp_path / "state" / "admin.sock"
    proc = subprocess.Popen([*CLI, "serve", "-c", str(conf)], env=ENV, cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert sock.exists(), proc.stdout.read().decode()[-2000:] if proc.poll() else "no socket"
        r = _cli("-c", str(conf), "domain", "add", "example.com", "--dmarc")
        assert r.returncode == 0, r.stderr
        r = _cli("-c", str(conf), "mailbox", "add", "joe@example.com", "--password-stdin",
                 "--max-size", "100M", stdin="pw-of-joe-1\n")
        assert r.returncode == 0, r.stderr
        r = _cli("-c", str(conf), "mailbox", "list", "--json")
        assert [m["address"] for m in json.loads(r.stdout)["mailboxes"]] == ["joe@example.com"]
        r = _cli("-c", str(conf), "dns-records", "example.com")
        assert "_dmarc.example.com." in r.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    assert rc == 0
    assert not sock.exists()


def test_serve_with_a_bad_config_fails_naming_the_key(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text("[admin]\nsocket_mod = 1\n")
    r = _cli("serve", "-c", str(conf))
    assert r.returncode == 2 and "admin.socket_mod" in r.stderr
