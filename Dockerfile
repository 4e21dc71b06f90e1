# ChargeTwin: one image for every component; the command picks it (chargetwin twin |
# bridge | rules | api | up). Configured by CHARGETWIN_* environment variables only.
#
#   docker build -t chargetwin .
#   docker run --rm -p 8000:8000 -p 9000:9000 chargetwin up

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/chargetwin
WORKDIR /src
COPY . .
RUN /opt/chargetwin/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/chargetwin/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CHARGETWIN_HOST=0.0.0.0 \
    CHARGETWIN_DATA_DIR=/data
COPY --from=build /opt/chargetwin /opt/chargetwin
# Mosquitto for the embedded broker of `chargetwin up` (without it: amqtt, which loses QoS 1
# messages under bursts; docs/deployment.md). Compose runs its own broker and ignores it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends mosquitto \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home chargetwin \
    && mkdir /data && chown chargetwin:chargetwin /data
USER chargetwin
WORKDIR /data
VOLUME ["/data"]
# 9000: OCPP-J websockets (bridge); 8000: HTTP API and dashboard (api).
EXPOSE 9000 8000
ENTRYPOINT ["chargetwin"]
CMD ["up"]
