# syntax=docker/dockerfile:1
# Lockstep: a release build on Debian 12, run from distroless (glibc, no shell, no package manager)
# as uid 65532. Build: docker build -t lockstep .

FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
# make (pinned to bookworm's): the jemalloc allocator (tikv-jemalloc-sys) is built from source with it.
RUN apt-get update && apt-get install -y --no-install-recommends make=4.3-4.1 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lockstep \
    && cp target/release/lockstep /lockstep

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /lockstep /usr/local/bin/lockstep
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/lockstep"]
CMD ["run", "--metrics-addr=0.0.0.0:8080"]
