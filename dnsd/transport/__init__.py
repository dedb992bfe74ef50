"""Transports: UDP (with recvmmsg/sendmmsg batches), TCP (RFC 7766), and the listeners that own their sockets."""
