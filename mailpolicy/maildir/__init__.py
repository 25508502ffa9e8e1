"""Maildir layer: validated paths, the fsync'ing writer, Maildir++ usage and `maildirsize`,
clearing and removing mailboxes, and the cached usage reader of the policy service.

May import: config, core. Imported by every service that touches mail on disk."""
