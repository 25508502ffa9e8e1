"""The reload plan: which changed keys apply in place and which wait for a restart."""

from __future__ import annotations

from mailpolicy import config
from mailpolicy.runtime.reload import plan


def _cfg(**sections: dict) -> config.Config:
    return config.from_dict(sections, base_dir="/srv")


def test_unchanged_is_nothing() -> None:
    old = _cfg()
    p = plan(old, _cfg())
    assert (p.applied, p.needs_restart, p.effective) == ((), (), old)


def test_in_place_keys_apply_and_listeners_paths_and_pools_wait() -> None:
    old = _cfg(listen={"lmtp": "127.0.0.1:2424"}, limits={"lmtp_workers": 2})
    new = _cfg(listen={"lmtp": "127.0.0.1:2525", "policy": "127.0.0.1:9999"},
               paths={"state_dir": "/elsewhere"},
               limits={"lmtp_workers": 4, "message_size_limit": "10M", "max_concurrency": 8},
               log={"level": "debug"}, policy={"reject_text": "no such user"},
               dmarc={"default_policy": "reject", "verify_processes": 2},
               client_settings={"imap": {"host": "imap.example.net"}},
               autoreply={"interval_days": 3})
    p = plan(old, new)
    assert p.applied == ("autoreply.interval_days", "client_settings.imap.host",
                         "dmarc.default_policy", "limits.max_concurrency",
                         "limits.message_size_limit", "log.level", "policy.reject_text")
    assert p.needs_restart == ("dmarc.verify_processes", "limits.lmtp_workers",
                               "listen.lmtp", "listen.policy", "paths.state_dir")
    e = p.effective
    assert (e.listen, e.paths, e.limits.lmtp_workers, e.dmarc.verify_processes) == (
        old.listen, old.paths, 2, 0)
    assert (e.log.level, e.limits.message_size_limit, e.limits.max_concurrency) == (
        "debug", 10 * 1024**2, 8)
    assert e.client_settings.imap.host == "imap.example.net" and e.base_dir == "/srv"


def test_only_restart_keys_changed_keeps_the_running_values() -> None:
    old = _cfg()
    p = plan(old, _cfg(store={"busy_timeout_ms": 1}))
    assert (p.applied, p.needs_restart) == ((), ("store.busy_timeout_ms",))
    assert p.effective == old
