# syntax=docker/dockerfile:1
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/broker ./cmd/broker

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/broker /usr/local/bin/broker
USER nonroot:nonroot
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/broker"]
CMD ["serve", "--config", "/etc/tokenbroker/broker.yaml"]
