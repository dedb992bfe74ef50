"""`workers: N`: a supervising parent and N worker processes sharing the listen sockets through SO_REUSEPORT."""
