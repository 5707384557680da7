"""The conformance suites: one parametrised set of fault tests per kind of service.

Every plugin of a kind passes its kind's suite (DESIGN.md, "Fault plans every plugin must
survive"): subclass the suite, give it a harness that builds the plugin and its fake, and
pytest collects the cases.

- :mod:`~antiphon.testing.conformance.tts`: streaming TTS (WebSocket, HTTP, native SDK).
- :mod:`~antiphon.testing.conformance.stt`: in-process STT engines.
- :mod:`~antiphon.testing.conformance.stt_ws`: WebSocket STT.
- :mod:`~antiphon.testing.conformance.llm`: streaming chat LLMs.
- :mod:`~antiphon.testing.conformance.realtime`: speech-to-speech realtime models.

They are test code (they import pytest and the fakes), so they live in the test package,
which production code never imports. Import a suite's module directly; this package
imports none of them.
"""

__all__ = []
