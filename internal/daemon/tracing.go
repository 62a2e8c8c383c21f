package daemon

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

// Tracing is OpenTelemetry's, configured only by the standard OTEL_*
// environment variables, and off unless they ask for it: tracing is on
// when OTEL_TRACES_EXPORTER names an exporter other than "none" (otlp,
// console), or when an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT
// or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, exporter otlp), and
// OTEL_SDK_DISABLED is not "true". Protocol, headers, sampler
// (OTEL_TRACES_SAMPLER) and resource (OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES) follow the SDK's own variables; the service
// name defaults to "tokenbroker".
//
// Spans carry what otelgrpc and otelhttp record by default: RPC method,
// status code, peer address, HTTP method, URL and status. The IdP URL
// is only scheme, host and path: upstream.Pools hands otelhttp each
// request with its URL as upstream.RedactURL shows it, so a key in a
// token URL's query is sent but never recorded. Neither records
// metadata, headers or bodies, so no API key, authorization header,
// client secret or token reaches a span (TestTracesCarryNoSecrets,
// TestServeChecksWhatTheIdPReturns). A
// failed IdP request's span status is err.Error(): the IdP transport is
// wrapped innermost by upstream.MapTransportErrors, so that text is
// upstream's fixed vocabulary, never net/http's or crypto/tls's, which
// quote the IdP's bytes (TestIdPSpansCarryNoTransportText). On responses
// otelhttp records the status code and protocol version, not the body.

// tracingEnabled applies the rules above to getenv.
func tracingEnabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	if e := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); e != "" {
		return e != "none"
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// tracerFromEnv returns the tracer provider the environment configures,
// and its shutdown; nil and a no-op when tracing is off.
func tracerFromEnv(ctx context.Context) (trace.TracerProvider, func(context.Context) error, error) {
	none := func(context.Context) error { return nil }
	if !tracingEnabled(os.Getenv) {
		return nil, none, nil
	}
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return nil, none, fmt.Errorf("daemon: tracing (OTEL_* environment): %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "tokenbroker")),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, none, fmt.Errorf("daemon: tracing resource (OTEL_RESOURCE_ATTRIBUTES): %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp, tp.Shutdown, nil
}

// propagator is W3C trace context only: baggage from callers is not
// carried to identity providers.
var propagator = propagation.TraceContext{}

// grpcTracing is the gRPC server option that traces every call.
func grpcTracing(tp trace.TracerProvider) grpc.ServerOption {
	return grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()), // metrics are Prometheus'
		otelgrpc.WithPropagators(propagator),
	))
}

// httpTracing wraps the identity-provider transport.
func httpTracing(tp trace.TracerProvider) func(http.RoundTripper) http.RoundTripper {
	return func(rt http.RoundTripper) http.RoundTripper {
		return otelhttp.NewTransport(rt,
			otelhttp.WithTracerProvider(tp),
			otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
			otelhttp.WithPropagators(propagator),
		)
	}
}
