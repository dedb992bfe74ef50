"""The network clients to upstream servers (UDP with TCP on truncation), shared by forwarding and, later, recursion."""
