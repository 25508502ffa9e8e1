"""A daemon configured as a node of a cluster registers itself and keeps its node seen."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from mailpolicy import config
from mailpolicy.core.cluster import reachable
from mailpolicy.runtime import daemon
from mailpolicy.store import Store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_config(tmp_path: Path, node: str, **cluster: object) -> config.Config:
    listen = {n: f"127.0.0.1:{free_port()}" for n in ("policy", "socketmap", "filter", "lmtp",
                                                        "filter_originating")}
    return config.from_dict({
        "listen": listen, "paths": {"state_dir": str(tmp_path / "state")},
        "filter": {"srs_domain": "mx.example.test"},
        "admin": {"group": ""}, "outbound": {"ip_pool": ["127.0.0.1"]},
        "limits": {"lmtp_workers": 1, "policy_workers": 1},
        "cluster": {"node": node, "heartbeat_seconds": 0.2, **cluster}})


async def test_daemon_registers_and_heartbeats(tmp_path: Path) -> None:
    cfg = node_config(tmp_path, "n1", imap="127.0.0.2:1143")
    ready = asyncio.Event()
    task = asyncio.create_task(daemon.serve(cfg, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        store = await Store.open(cfg.store_url)
        try:
            n = await store.nodes.get("n1")
            assert n is not None and n.lmtp == cfg.listen.lmtp
            assert (n.imap_host, n.imap_port) == ("127.0.0.2", 1143)
            first = n.last_seen
            assert first is not None and reachable(n, 0.2)
            await asyncio.sleep(0.7)
            n = await store.nodes.get("n1")
            assert n is not None and n.last_seen is not None and n.last_seen > first
        finally:
            await store.close()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # stopped: no more heartbeats, so it is soon unreachable
    store = await Store.open(cfg.store_url)
    try:
        n = await store.nodes.get("n1")
        assert n is not None and not reachable(n, 0.2, now=time.time() + 1)
    finally:
        await store.close()
