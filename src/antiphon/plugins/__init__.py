"""Provider plugins: thin mappings of the service contracts onto protocols and connections."""

__all__ = []
