"""What dnsd counts and how it is published: plain counters on the hot path, a Prometheus collector at scrape."""
