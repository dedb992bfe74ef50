"""dnsd: an authoritative DNS server for Kubernetes clusters."""

__version__ = "0.1.0"
