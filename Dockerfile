# govpipe: a slim runtime image. Config is mounted at /etc/govpipe/ (govpipe.toml, keys).
#
# BASE_IMAGE is any image with python3 ≥ 3.11 and its venv module: the official
# python:3.11-slim by default, or a Debian-python root (python3, python3-venv), which is
# how the test suite builds it without a registry. For reproducible builds pin it by digest:
#   docker buildx imagetools inspect python:3.11-slim     # prints the index digest
#   docker build --build-arg BASE_IMAGE=python:3.11-slim@sha256:<digest> -t govpipe .
# The same BASE_IMAGE runs both stages: the virtualenv's python is a link to the base's
# interpreter (/usr/local/bin/python3 on python:*-slim, /usr/bin/python3 on Debian).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG PIP="/opt/govpipe/bin/python -m pip --no-cache-dir --disable-pip-version-check -q"
RUN python3 -m venv /opt/govpipe
WORKDIR /src
# The dependencies first, in a layer of their own (installed with empty stand-ins for the
# packages and the readme): rebuilt only when pyproject.toml changes, not for every change
# of the code or the docs.
COPY pyproject.toml ./
RUN mkdir pipeline sinks && touch pipeline/__init__.py sinks/__init__.py README.md \
    && $PIP install . \
    && rm -rf pipeline sinks build ./*.egg-info README.md
COPY README.md ./
COPY pipeline ./pipeline
COPY sinks ./sinks
# Build tools are removed from the environment once govpipe is in it: the runtime image
# runs code, it never installs any.
RUN $PIP install --no-deps --force-reinstall . \
    && $PIP uninstall -y pip setuptools

FROM ${BASE_IMAGE}
# No pip, setuptools or bundled wheels in the base either (whichever of them it has).
RUN if python3 -m pip --version >/dev/null 2>&1; then \
        python3 -m pip uninstall --disable-pip-version-check -q -y pip setuptools wheel; \
    fi \
    && rm -rf /usr/share/python-wheels /usr/local/lib/python3*/ensurepip/_bundled \
        /usr/lib/python3*/ensurepip/_bundled \
    && groupadd --gid 10001 govpipe \
    && useradd --no-log-init --uid 10001 --gid 10001 --home-dir /var/lib/govpipe --create-home \
        --shell /usr/sbin/nologin govpipe \
    && mkdir -p /etc/govpipe
COPY --from=build /opt/govpipe /opt/govpipe
COPY config/govpipe.toml /etc/govpipe/govpipe.toml
ENV PATH=/opt/govpipe/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Inside a container the server must listen beyond loopback to be scraped and probed.
ENV GOVPIPE_SERVER__LISTEN=0.0.0.0:9464
# The image user, by number so that Kubernetes' runAsNonRoot can check it. The working
# directory holds the default dead-letter folder (./deadletter/): mount a volume there.
USER 10001:10001
WORKDIR /var/lib/govpipe
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["govpipe"]
CMD ["run", "--config", "/etc/govpipe/govpipe.toml"]
