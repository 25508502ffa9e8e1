"""The content filter: SMTP server with XFORWARD, a pipeline of named steps, and reinjection.

Service. May import: config, core, esmtp, auth, autoreply, runtime layers.
"""
