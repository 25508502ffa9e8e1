"""SPF, DKIM and DMARC (RFC 9989) evaluation for the filter; DNS through auth.dns."""
