# govpipe: slim runtime image. Config is mounted at /etc/govpipe/ (govpipe.toml, keys).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY sinks ./sinks
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /var/lib/govpipe --create-home govpipe \
    && mkdir -p /etc/govpipe && chown govpipe /etc/govpipe
COPY config/govpipe.toml /etc/govpipe/govpipe.toml
USER govpipe
WORKDIR /var/lib/govpipe
# Inside a container the server must listen beyond loopback to be scraped and probed.
ENV GOVPIPE_SERVER__LISTEN=0.0.0.0:9464
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["govpipe"]
CMD ["run", "--config", "/etc/govpipe/govpipe.toml"]
