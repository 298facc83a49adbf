# syntax=docker/dockerfile:1
# Builds every binary under cmd/ (api, worker, and any other such as bench)
# as a static executable; the runtime image holds them all, and
# docker-compose.yml picks one per service with `command:`.

FROM golang:1.26-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    mkdir -p /out && go build -ldflags='-s -w' -o /out/ ./cmd/...

FROM alpine:3.22
# ca-certificates for TLS to managed Postgres or RabbitMQ; busybox's wget
# serves the compose health checks.
RUN apk add --no-cache ca-certificates tzdata \
    && adduser -D -H -u 10001 epoch
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
# api listens on :8080, worker serves /healthz, /readyz, /metrics on :8081.
EXPOSE 8080 8081
CMD ["api"]
