# roomcast edge node image. Build: docker build -t roomcast:0.1.0 .
# Multi-stage: the build stage installs the exact versions of requirements.lock (the runtime
# part of what `make test` installs from requirements-dev.lock), then the package without
# resolving anything again, into a virtualenv; the runtime stage copies only that virtualenv.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY roomcast ./roomcast
COPY node ./node
COPY backplane ./backplane
COPY presence ./presence
RUN python -m venv /opt/roomcast \
 && /opt/roomcast/bin/pip install -r requirements.lock \
 && /opt/roomcast/bin/pip install --no-deps . \
 && /opt/roomcast/bin/python -c "from roomcast import compat; compat.check()" \
 && /opt/roomcast/bin/roomcast --help > /dev/null

FROM python:3.11-slim
RUN groupadd --gid 10001 roomcast \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin roomcast
COPY --from=build /opt/roomcast /opt/roomcast
ENV PATH=/opt/roomcast/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ROOMCAST_HOST=0.0.0.0 \
    ROOMCAST_PORT=8765
USER 10001:10001
EXPOSE 8765
ENTRYPOINT ["roomcast", "node"]
