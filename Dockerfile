# syntax=docker/dockerfile:1
# One slim image holding every OPAL binary; docker-compose.yml picks the binary
# per service with `command`.

# ---- build: the whole workspace in release mode ----
FROM rust:1.95-slim-bookworm AS build
# librdkafka is built from source by rdkafka-sys (make, g++, perl); ssl and
# native-tls link OpenSSL; libz-sys wants zlib.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake perl pkg-config python3 libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bins \
 && mkdir -p /out \
 && cp target/release/opal-admin target/release/opal-producer target/release/opal-registry \
       target/release/opal-dlq target/release/opal-counting-consumer \
       target/release/diagnostics-consumer target/release/recommendations-consumer \
       target/release/feedback-consumer target/release/forecast-consumer /out/

# ---- runtime: Debian slim, no compiler, non-root ----
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 opal \
 && useradd --system --uid 10001 --gid opal --no-create-home --shell /usr/sbin/nologin opal
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
EXPOSE 9101 9102 9103 9104
CMD ["opal-admin", "--help"]
