# syntax=docker/dockerfile:1
# One slim image holding every OPAL binary; docker-compose.yml picks the binary
# per service with `command`.

# ---- build: the whole workspace in release mode ----
FROM rust:1.95-slim-bookworm AS build
# What the native dependencies' build scripts use (Cargo.lock: rdkafka-sys with
# features ssl + libz, openssl-sys, libz-sys; no other *-sys crate):
# - build-essential: rdkafka-sys builds the bundled librdkafka with its own
#   configure script (bash) and make, C and C++ (src-cpp is built too).
# - pkg-config + libssl-dev: openssl-sys (rdkafka's ssl feature and reqwest's
#   native-tls) and librdkafka's configure find the system OpenSSL.
# - zlib1g-dev: libz-sys links the system zlib when pkg-config finds it (it
#   would otherwise compile its vendored copy); the runtime stage has zlib1g.
# Not installed, since nothing uses them: cmake (only rdkafka-sys's cmake-build
# feature, which is off), perl (only for building OpenSSL from source, the
# ssl-vendored feature, also off; librdkafka's configure does not use it) and
# python3 (librdkafka's configure only uses it to generate a linker script for
# the shared library, and skips that without it; we link the static library).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential pkg-config libssl-dev zlib1g-dev \
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
       target/release/feedback-consumer target/release/forecast-consumer \
       target/release/opal-gateway /out/

# ---- runtime: Debian slim, no compiler, non-root ----
# No curl or wget: docker-compose.yml's healthchecks use bash (Essential in
# Debian, so always here) and its /dev/tcp.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 opal \
 && useradd --system --uid 10001 --gid opal --no-create-home --shell /usr/sbin/nologin opal
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
EXPOSE 9101 9102 9103 9104 9200
CMD ["opal-admin", "--help"]
