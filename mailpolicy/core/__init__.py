"""Pure values and rules: addresses (normalise, IDNA, +ext, name rules), the model, the
Directory protocol and `resolve()`, the directory cache, replies and enhanced status codes,
the SRS codec, the outbound IP choice and TLS certificate checks.

May import: config only. Imported by everything."""
