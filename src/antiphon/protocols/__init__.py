"""Sans-I/O wire protocols: encoders, parsers and state machines, no sockets."""

__all__ = []
