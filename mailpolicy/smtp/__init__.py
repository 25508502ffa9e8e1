"""The content filter: SMTP server with XFORWARD, a pipeline of named steps, and reinjection."""
