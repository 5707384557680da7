# antiphon serve in a slim image: the runtime only (no dev extras), run as a non-root
# user. The offline agent's models (Silero VAD, PocketSphinx, eSpeak NG) are inside
# their pip wheels, so nothing is downloaded at run time.
#
#   docker build -t antiphon:0.1.0 .
#   docker run --rm -p 8000:8000 --stop-timeout 330 antiphon:0.1.0 \
#       serve --host 0.0.0.0 --token "$TOKEN"
#
# Your own agent: COPY agent.py /app/agent.py in an image FROM this one, then
#   CMD ["serve", "/app/agent.py", "--host", "0.0.0.0"]
# EXTRAS: pip extras to install (default webrtc; "" for none; e.g. "webrtc,azure").

ARG PYTHON=3.11

FROM python:${PYTHON}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:${PYTHON}-slim
ARG EXTRAS=webrtc
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 antiphon \
    && useradd --system --uid 10001 --gid antiphon --create-home --home-dir /app antiphon
COPY --from=build /wheels /wheels
RUN set -eu; wheel="$(ls /wheels/antiphon-*.whl)"; \
    pip install --no-cache-dir "${wheel}${EXTRAS:+[$EXTRAS]}"; \
    rm -rf /wheels
WORKDIR /app
USER antiphon
EXPOSE 8000
# SIGTERM drains: calls may go on for --drain-timeout (300 s) before the process exits,
# so give `docker stop` (--stop-timeout) and Kubernetes (terminationGracePeriodSeconds)
# more than that.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=4)"]
ENTRYPOINT ["antiphon"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
