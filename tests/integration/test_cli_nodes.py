"""`mailpolicy node ...` and `mailbox add --node` as real processes against a real admin
server: the registry, placement shown in `mailbox list/show`, refusals, unreachable nodes."""

from __future__ import annotations

import json

from test_admin_support import AdminEnv, admin_server, cli, cli_env, cli_ok

env_fixture = cli_env  # provides the `env` fixture (an admin server)

ok = cli_ok


async def test_node_verbs_placement_and_refusals(env: AdminEnv) -> None:
    out = await ok(env, "node", "add", "n1", "--lmtp", "127.0.0.2:24", "--imap", "127.0.0.2:143")
    assert "State:" in out and "active" in out and "never" in out
    await ok(env, "node", "add", "n2", "--lmtp", "127.0.0.3:24")
    rc, _out, err = await cli(env, "node", "add", "n2", "--lmtp", "127.0.0.3:24")
    assert rc == 1 and "exists" in err
    rc, _out, err = await cli(env, "node", "add", "n3", "--lmtp", "no-port")
    assert rc == 1 and "lmtp" in err
    await env.store.nodes.heartbeat("n1")  # n1's daemon is alive, n2's never started
    rows = [ln.split() for ln in (await ok(env, "node", "list")).splitlines()]
    assert rows[0] == ["Name", "State", "Seen", "LMTP", "IMAP", "Mailboxes", "Used"]
    assert rows[1][:3] == ["n1", "active", "yes"] and rows[2][:3] == ["n2", "active",
                                                                      "UNREACHABLE"]
    await ok(env, "domain", "add", "example.com")
    await ok(env, "mailbox", "add", "a@example.com", "--node", "n2")
    await ok(env, "mailbox", "add", "b@example.com")  # fewest bytes: n1 (by name on a tie)
    drained = json.loads(await ok(env, "node", "drain", "n1", "--json"))
    assert drained["state"] == "draining"
    await ok(env, "mailbox", "add", "c@example.com")  # n1 drains: n2
    rows = [ln.split() for ln in (await ok(env, "mailbox", "list")).splitlines()]
    assert rows[0] == ["Name", "Properties", "Size", "Node"]
    assert {r[0]: r[3] for r in rows[1:]} == {"a@example.com": "n2", "b@example.com": "n1",
                                              "c@example.com": "n2"}
    assert "Home node:" in await ok(env, "mailbox", "show", "a@example.com")
    rc, _out, err = await cli(env, "mailbox", "add", "d@example.com", "--node", "n9")
    assert rc == 1 and "no node n9" in err
    assert await env.store.get_mailbox("d@example.com") is None
    rc, _out, err = await cli(env, "node", "remove", "n2")
    assert rc == 1 and "still home to 2 mailbox(es)" in err
    shown = json.loads(await ok(env, "node", "show", "n2", "--json"))
    assert (shown["mailboxes"], shown["reachable"]) == (2, False)
    edited = json.loads(await ok(env, "node", "edit", "n2", "--state", "down", "--imap",
                                 "127.0.0.3:1143", "--json"))
    assert (edited["state"], edited["imap"]) == ("down", "127.0.0.3:1143")
    await ok(env, "mailbox", "delete", "a@example.com", "c@example.com", "--yes")
    assert (await ok(env, "node", "remove", "n2")).strip() == "removed n2"
    rc, _out, err = await cli(env, "node", "show", "n2")
    assert rc == 1 and "no such node" in err


async def test_mailbox_move_refusals_change_nothing() -> None:
    cluster = {"node": "n1", "doveadm_port": 1, "doveadm_password": "x",
               "doveadm_command": ["/usr/bin/doveadm", "-c", "/nonexistent/dovecot.conf"]}
    async with admin_server(cluster=cluster) as env:
        await ok(env, "node", "add", "n1", "--lmtp", "127.0.0.2:24", "--imap", "127.0.0.2:143")
        await ok(env, "node", "add", "n2", "--lmtp", "127.0.0.3:24", "--imap", "127.0.0.3:143")
        await ok(env, "node", "add", "n3", "--lmtp", "127.0.0.4:24")
        await ok(env, "domain", "add", "example.com")
        await ok(env, "mailbox", "add", "a@example.com", "--node", "n1")
        await ok(env, "mailbox", "add", "b@example.com", "--node", "n2")
        env.deliver("a@example.com", 100)
        before = await env.snapshot()
        for verb in ("delete", "clear"):  # the Maildir is on node n2: not here
            rc, _out, err = await cli(env, "mailbox", verb, "b@example.com", "--yes")
            assert rc == 1 and "lives on node n2: run this there" in err, err
        for args, text in (
                (("b@example.com", "--to", "n1"), "lives on node n2: run the move there"),
                (("a@example.com", "--to", "n1"), "already lives on node n1"),
                (("a@example.com", "--to", "n9"), "no node n9"),
                (("a@example.com", "--to", "n3"), "no Dovecot address"),
                (("a@example.com", "--to", "n2"), "doveadm backup to 127.0.0.3 failed"),
                (("nobody@example.com", "--to", "n2"), "no such mailbox")):
            rc, _out, err = await cli(env, "mailbox", "move", *args)
            assert rc == 1 and text in err, (args, err)
        assert await env.snapshot() == before  # also no audit line: nothing began
        m = await env.store.get_mailbox("a@example.com")
        assert m is not None and (m.home_node, m.moving_to) == ("n1", "")
