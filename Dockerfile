# Build: the whole workspace in release mode.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY migration ./migration
COPY bench ./bench
COPY assets ./assets
COPY src ./src
COPY tests ./tests
COPY schema.graphql clippy.toml ./
RUN cargo build --release --locked --bin tasknest

# Run: a slim image with the binary and curl for health checks.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /app tasknest
WORKDIR /app
COPY --from=build /src/target/release/tasknest /usr/local/bin/tasknest
USER tasknest
ENV TASKNEST_ADDR=0.0.0.0:8000 TASKNEST_LOG_FORMAT=json
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
ENTRYPOINT ["tasknest"]
CMD ["serve"]
