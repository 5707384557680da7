"""The server: the ASGI app of ``antiphon serve`` (calls, telephony, ops endpoints)."""

__all__: list[str] = []
