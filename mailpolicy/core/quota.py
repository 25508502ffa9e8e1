"""The one quota rule and the one quota reply, used by the policy service (at RCPT) and by
LMTP (at RCPT and at delivery)."""

from __future__ import annotations

from mailpolicy.core.replies import MAILBOX_FULL, MAILBOX_FULL_TEMP, Reply


def exceeds_quota(used: int, size: int, limit: int | None) -> bool:
    """Whether a message of `size` bytes may not be stored in a mailbox holding `used` bytes
    with the limit `limit` (None = unlimited): the mailbox is full already, or the message
    would take it past the limit. `size` 0 (not known yet, e.g. no SIZE= at RCPT) asks only
    whether the mailbox is full."""
    return limit is not None and (used >= limit or used + size > limit)


def quota_reply(quota_code: int) -> Reply:
    """The reply for a full mailbox: `policy.quota_code` 452 is temporary (4.2.2), anything
    else (552, the default) permanent (5.2.2)."""
    return MAILBOX_FULL_TEMP if quota_code == 452 else MAILBOX_FULL
