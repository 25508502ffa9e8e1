"""LMTP as deployed (README "Deploying"): only on a Unix socket in Postfix's queue directory
that Postfix and mailpolicy can reach and no other local user; no LMTP port on TCP."""

from __future__ import annotations

import pwd
import socket
import subprocess
import uuid

from harness import Stack, make_message

SYSTEM_PYTHON = "/usr/bin/python3"  # runnable by every user (a venv under /root is not)
CONNECT = ("import socket, sys\n"
           "s = socket.socket(socket.AF_UNIX)\n"
           "try:\n"
           "    s.connect(sys.argv[1]); print(s.recv(100).decode().strip())\n"
           "except OSError as e:\n"
           "    print(type(e).__name__)\n")


def connect_as(user: str, path: str) -> str:
    """What `user` gets when connecting to the Unix socket `path`: a greeting or an error."""
    res = subprocess.run([SYSTEM_PYTHON, "-I", "-c", CONNECT, path], user=user,
                         group=pwd.getpwnam(user).pw_gid, extra_groups=[], capture_output=True,
                         text=True, timeout=30, cwd="/")
    return res.stdout.strip() or res.stderr.strip()


def test_lmtp_is_on_a_socket_only_postfix_can_reach(e2e_stack: Stack) -> None:
    cfg = e2e_stack.cfg
    assert cfg.listen.lmtp == "" and cfg.lmtp_socket is not None
    assert e2e_stack.postfix_fragments()["main_cf"]["virtual_transport"] == (
        f"mailpolicy-lmtp:unix:{cfg.lmtp_socket}")
    assert connect_as("postfix", str(cfg.lmtp_socket)).startswith("220 ")
    other = next(u for u in ("daemon", "bin", "sys")
                 if pwd.getpwnam(u).pw_uid not in (e2e_stack.uid, 0))
    assert connect_as(other, str(cfg.lmtp_socket)) == "PermissionError"
    with socket.socket() as s:  # and nothing on the TCP port LMTP used to have
        assert s.connect_ex(("127.0.0.1", e2e_stack.ports["lmtp"])) != 0


async def test_mail_is_delivered_through_the_socket(e2e_stack: Stack) -> None:
    domain = f"d{uuid.uuid4().hex[:10]}.e2e.test"
    async with e2e_stack.store() as store:
        await store.create_domain(domain)
        await store.create_mailbox(f"u@{domain}")
    assert e2e_stack.send("s@outside.example", f"u@{domain}",
                          make_message("s@outside.example", f"u@{domain}")) == {}
    assert len(e2e_stack.wait_maildir(f"u@{domain}", 1)) == 1
