"""The forward link: names outside our zones, sent to upstream resolvers (per-domain stubs, then the default)."""
