"""Offline components that need no keys and no network (the default of ``antiphon talk``)."""

from antiphon.plugins.offline.llm import FaqEntry, OfflineLLM, get_time, load_faq

__all__ = ["FaqEntry", "OfflineLLM", "get_time", "load_faq"]
