"""mailpolicy: policy service, socketmap tables, content filter and LMTP delivery beside Postfix."""

__version__ = "0.1.0"
