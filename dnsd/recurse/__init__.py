"""The recurse link: iterative resolution from the root hints (recursion: iterative)."""
