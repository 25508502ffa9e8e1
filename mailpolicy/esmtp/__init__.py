"""What the SMTP-speaking services (filter, LMTP) share: DATA decoding, the DATA preamble,
enhanced status codes on replies, and the one adapter that touches aiosmtpd's internals.

May import: config, core, runtime (logs). Imported by smtp/ and lmtp/."""
