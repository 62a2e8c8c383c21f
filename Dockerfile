# syntax=docker/dockerfile:1
# Release image: a static, non-root broker on distroless.
# Go 1.27 for the build: the 1.26 line has standard-library advisories that
# the 1.27 patch fixes (go.mod stays at 1.26 so either builds the module).
# .ci/release builds the same binary with the same flags and scans it.
ARG GO_VERSION=1.27.3

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOTOOLCHAIN=local
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN go build -trimpath \
      -ldflags="-s -w -X main.stampedVersion=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/broker ./cmd/broker

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/broker /broker
USER nonroot:nonroot
# gRPC API, admin (metrics, readiness, status page)
EXPOSE 50051 9464
ENTRYPOINT ["/broker", "serve"]
CMD ["--config", "/etc/tokenbroker/broker.yaml"]
