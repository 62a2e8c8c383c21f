package server

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

// TestCallNotLoggedCostsNoFields: at the default level, info, a call that
// is not logged (a success, a cancel) builds no log fields, and the
// whole interceptor allocates its call's context only; a failure is
// logged with go-grpc-middleware's fields.
func TestCallNotLoggedCostsNoFields(t *testing.T) {
	var logs logtest.Buffer
	l := newCallLog(slog.New(slog.NewJSONHandler(&logs, nil)), DefaultSlowCall)
	m := &method{service: "tokenbroker.v1.TokenBrokerService", name: "GetToken", typ: interceptors.Unary, metrics: noMetrics{}}
	ctx := context.Background()
	for _, code := range []codes.Code{codes.OK, codes.Canceled} {
		if n := testing.AllocsPerRun(100, func() { l.finished(ctx, nil, m, time.Now(), time.Millisecond, code, nil) }); n != 0 {
			t.Errorf("a call ending %s, not logged, allocates %v times, want 0", code, n)
		}
	}
	if logs.String() != "" {
		t.Fatalf("calls not logged wrote %q", logs.String())
	}

	s := New(Config{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	t.Cleanup(s.GRPC.Stop) // its stream workers
	o := newObserver(s, l, Config{})
	info := &grpc.UnaryServerInfo{FullMethod: "/tokenbroker.v1.TokenBrokerService/GetToken"}
	ok := func(context.Context, any) (any, error) { return nil, nil }
	if n := testing.AllocsPerRun(100, func() { _, _ = o.unary(ctx, nil, info, ok) }); n != 1 {
		t.Errorf("the interceptor allocates %v times per call, want 1 (its context)", n)
	}

	denied := func(context.Context, any) (any, error) { return nil, status.Error(codes.PermissionDenied, "no") }
	if _, err := o.unary(ctx, nil, info, denied); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("denied call: %v", err)
	}
	line := logs.String()
	for _, f := range []string{`"level":"WARN"`, `"msg":"finished call"`, `"protocol":"grpc"`, `"grpc.component":"server"`,
		`"grpc.service":"tokenbroker.v1.TokenBrokerService"`, `"grpc.method":"GetToken"`, `"grpc.method_type":"unary"`,
		`"grpc.start_time":`, `"grpc.code":"PermissionDenied"`, `"grpc.error":"rpc error: code = PermissionDenied desc = no"`, `"grpc.time_ms":`} {
		if !strings.Contains(line, f) {
			t.Errorf("the denied call's line lacks %s: %s", f, line)
		}
	}
}
