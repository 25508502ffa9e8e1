"""LMTP delivery agent: per-recipient replies, quota, durable Maildir++ delivery."""
