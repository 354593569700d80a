# syntax=docker/dockerfile:1
# The oidc-refresh-operator image: the release binary (no sandbox simulators) on distroless, non-root.
#
#   docker build -t oidc-refresh-operator:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t <registry>/oidc-refresh-operator:0.1.0 --push .
#
# The binary links glibc dynamically (rustls/ring, no OpenSSL), so the runtime is
# gcr.io/distroless/cc-debian12 (glibc, libgcc, CA certificates, no shell, no package manager),
# the same Debian release as the builder. Runs as UID/GID 65532 (nonroot), read-only root
# filesystem friendly: it writes no files.
#
# Not built by the project's CI (no container engine there): the build command is the one the
# tests and the chart's memory measurements use; `ldd` of that binary shows only glibc and libgcc.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --bin oidc-refresh-operator \
 && install -D -m 0755 target/release/oidc-refresh-operator /out/oidc-refresh-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="oidc-refresh-operator" \
      org.opencontainers.image.description="Makes OIDC refresh tokens work for Coder: configures the identity provider and the Coder Deployment declaratively." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
COPY --from=builder /out/oidc-refresh-operator /usr/local/bin/oidc-refresh-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/oidc-refresh-operator"]
CMD ["run"]
