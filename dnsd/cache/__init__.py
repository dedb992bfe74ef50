"""The answer cache: what the forward and recurse links returned, kept as wire bytes that age by a patch."""
