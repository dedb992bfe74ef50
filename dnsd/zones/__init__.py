"""Zone files: RFC 1035 master files served authoritatively (the second authoritative link of the chain)."""
