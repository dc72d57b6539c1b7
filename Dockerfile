# syntax=docker/dockerfile:1
#
# okms-operator container image.
#
# Build: a static musl binary. The operator uses rustls with the `ring` provider and no OpenSSL,
# so nothing needs a libc at run time; a static binary lets the runtime image be
# distroless/static (no libc, no shell, no package manager: the smallest attack surface, as the
# design's security model asks). ring's C/assembly parts are compiled with musl-gcc (musl-tools).
# The trust store comes from the runtime image's /etc/ssl/certs (distroless ships ca-certificates).
# `--no-default-features` leaves out the `sandbox` feature: the image carries neither emulator
# (`okms-operator sandbox` says this build has none).

FROM rust:1.95-bookworm AS build
ARG TARGET=x86_64-unknown-linux-musl
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "${TARGET}"
WORKDIR /src
COPY . .
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=musl-gcc
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --target "${TARGET}" --bin okms-operator \
 && install -D -m 0755 "target/${TARGET}/release/okms-operator" /out/okms-operator

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="okms-operator" \
      org.opencontainers.image.description="Kubernetes operator for OVHcloud OKMS Secret Manager" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/okms-operator/okms-operator"
COPY --from=build /out/okms-operator /okms-operator
# distroless `nonroot` (65532); numeric so Kubernetes' runAsNonRoot can verify it
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/okms-operator"]
CMD ["run"]
