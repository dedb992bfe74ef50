"""The HTTP side: health, readiness, Prometheus metrics and the status page (aiohttp, in the DNS event loop)."""
