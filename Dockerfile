# syntax=docker/dockerfile:1
# Switchboard, built from this repository and run as a non-root user.
#
#   docker build -t switchboard .
#   docker run -p 6001:6001 -v switchboard-data:/data \
#     -e SWITCHBOARD_APP_ID=my-app -e SWITCHBOARD_APP_KEY=... -e SWITCHBOARD_APP_SECRET=... switchboard
#
# Configuration: SWITCHBOARD_* variables (README "Configuration"), or a TOML file mounted at
# /etc/switchboard/switchboard.toml with SWITCHBOARD_CONFIG=/etc/switchboard/switchboard.toml.
# deploy/compose.yaml runs two nodes of this image behind nginx.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target folders are build caches, kept between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin switchboard \
    && install -m 0755 target/release/switchboard /usr/local/bin/switchboard

FROM debian:bookworm-slim
# The binary needs only glibc (TLS is rustls with built-in roots): no packages are added.
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin switchboard \
    && mkdir -p /data /etc/switchboard \
    && chown switchboard:switchboard /data
COPY --from=build /usr/local/bin/switchboard /usr/local/bin/switchboard
ENV SWITCHBOARD_HOST=0.0.0.0 \
    SWITCHBOARD_DATA_DIR=/data \
    RUST_LOG=info
VOLUME ["/data"]
EXPOSE 6001 9601
USER 10001:10001
# GET /up over bash's /dev/tcp (no curl in the image): 200 while serving, 503 while draining.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${SWITCHBOARD_PORT:-6001} && printf 'GET /up HTTP/1.0\\r\\n\\r\\n' >&3 && head -c 12 <&3 | grep -q ' 200'"]
# SIGTERM drains: probes 503, then connections closed with 4200 (README "Deploying").
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/switchboard"]
CMD ["serve"]
