package daemon

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

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

// Tracing is OpenTelemetry's, configured by the standard OTEL_* variables
// and off unless they ask for it (README, Traces). Spans carry no
// metadata, headers or bodies, and IdP transport errors are upstream's
// fixed vocabulary (docs/ARCHITECTURE.md, "IdP bytes never pass through").

// tracingEnabled reports whether getenv asks for tracing: an exporter
// other than "none", or an OTLP endpoint, unless OTEL_SDK_DISABLED.
func tracingEnabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	if e := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); e != "" {
		return e != "none"
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// tracing returns the gRPC server options and the IdP transport wrapper
// that trace with Options.TracerProvider, else with the provider the
// environment configures (its shutdown, flushing spans, is one of Close's);
// none when tracing is off.
func (d *Daemon) tracing() ([]grpc.ServerOption, func(http.RoundTripper) http.RoundTripper, error) {
	tp := d.opts.TracerProvider
	if tp == nil && tracingEnabled(os.Getenv) {
		sdk, err := tracerFromEnv(context.Background())
		if err != nil {
			return nil, nil, err
		}
		d.closers = append(d.closers, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return sdk.Shutdown(ctx)
		})
		tp = sdk
	}
	if tp == nil {
		return nil, nil, nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()), // metrics are Prometheus'
		otelgrpc.WithPropagators(propagator),
	))}, httpTracing(tp), nil
}

// tracerFromEnv is the tracer provider of the OTEL_* environment.
func tracerFromEnv(ctx context.Context) (*sdktrace.TracerProvider, error) {
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return nil, fmt.Errorf("daemon: tracing (OTEL_* environment): %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "tokenbroker")),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("daemon: tracing resource (OTEL_RESOURCE_ATTRIBUTES): %w", err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}

// propagator is W3C trace context only: baggage from callers is not
// carried to identity providers.
var propagator = propagation.TraceContext{}

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
