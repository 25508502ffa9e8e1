"""What the SMTP-speaking services (filter, LMTP) share: DATA decoding and dot-stuffing
(stream.py), the DATA preamble (data.py), the filter's message spool (spool.py), and the one
adapter that touches aiosmtpd's internals (adapter.py: deadlines, connection bound, enhanced
status codes from core.replies).

May import: config, core, runtime (logs). Imported by smtp/ and lmtp/."""
