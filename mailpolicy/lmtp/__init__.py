"""LMTP delivery agent: per-recipient replies, quota, durable Maildir++ delivery.

Service. May import: config, core, esmtp, maildir, autoreply, runtime layers.
"""
