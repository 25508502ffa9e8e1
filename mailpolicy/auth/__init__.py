"""SPF, DKIM and DMARC (RFC 9989) evaluation for the filter; DNS through auth.dns.

Layer. May import: config, core. Imported by the filter, admin (publish) and CLI.
"""
