# Multi-stage build: cgo (pg_query_go) in the build stage; pg_dump in the
# runtime image for schema sync.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build -trimpath -ldflags="-s -w" -o /out/reshard ./cmd/reshard

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-15 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /etc/reshard reshard
COPY --from=build /out/reshard /usr/local/bin/reshard
USER reshard
WORKDIR /etc/reshard
EXPOSE 6432
ENTRYPOINT ["/usr/local/bin/reshard", "--config", "/etc/reshard/pgdog.toml", "--users", "/etc/reshard/users.toml"]
CMD ["serve"]
