"""The query engine: per-query context, the chain of links, the pre-rendered fast path, exceptions to rcodes."""
