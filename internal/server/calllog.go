package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/tokenbroker/tokenbroker/internal/flood"
	"github.com/tokenbroker/tokenbroker/internal/guard"
)

// callLog returns the request log of the server: one line per finished
// call with method, code, duration, peer, and the caller and tenant the
// guard adds; never a payload (it carries tokens). Successful calls, and
// calls the client cancelled, are logged at debug, unless a unary call
// took slow or longer, which is logged at info with slow=true; failures
// at the levels of go-grpc-middleware (info for client errors, warn for
// unavailable/denied, error for internal errors).
//
// The guard's fields, caller and tenant, come from the guard.CallInfo
// that withCallInfo and withCallInfoStream put in the context outside the
// request log; they are appended only to a line that is written.
//
// Lines at info and above are rate limited per status code (callLogRate,
// callLogBurst): one caller looping on a denied call must not fill the
// log pipeline (the audit trail and tokenbroker_denials_total count every
// denial). The next line of a code says how many were dropped before it.
func callLog(log *slog.Logger, slow time.Duration) (logging.Logger, []logging.Option) {
	limit := flood.New(flood.Config[string, struct{}]{Every: time.Second / callLogRate, Burst: callLogBurst, MaxKeys: 64})
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		if lvl == logging.LevelDebug && isSlowUnary(fields, slow) {
			lvl = logging.LevelInfo
			fields = append(fields, "slow", true)
		}
		if !log.Enabled(ctx, slog.Level(lvl)) {
			return
		}
		if lvl >= logging.LevelInfo {
			ok, dropped := limit.Allow(codeOf(fields), struct{}{})
			if !ok {
				return
			}
			if dropped > 0 {
				fields = append(fields, "suppressed_before", dropped)
			}
		}
		fields = guard.CallInfoFrom(ctx).LogFields(fields)
		log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	return logger, []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(func(c codes.Code) logging.Level {
			if c == codes.OK || c == codes.Canceled {
				return logging.LevelDebug
			}
			return logging.DefaultServerCodeToLevel(c)
		}),
		logging.WithDurationField(func(d time.Duration) logging.Fields {
			return logging.Fields{durationField, float64(d.Microseconds()) / 1000}
		}),
	}
}

// Request-log lines at info and above, per status code.
const (
	callLogRate  = 5 // per second
	callLogBurst = 20
)

// refusedEverySecond returns streamLimiter.denied: it counts the calls
// refused before their request (an API key that does not verify) and
// logs their count at most once a second, off the refusing goroutine.
func refusedEverySecond(log *slog.Logger) func() {
	g := flood.New(flood.Config[struct{}, struct{}]{Every: time.Second, Report: func(_, _ struct{}, n int) {
		log.Warn("calls refused before their request: the API key does not verify", "count", n)
	}})
	return func() { g.Allow(struct{}{}, struct{}{}) }
}

// codeOf returns the status code field of a finished call's log fields.
func codeOf(fields []any) string {
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i] == "grpc.code" {
			if s, ok := fields[i+1].(string); ok {
				return s
			}
		}
	}
	return ""
}

// durationField is the call's duration in milliseconds.
const durationField = "grpc.time_ms"

// isSlowUnary reports whether fields are those of a unary call that took
// at least slow. A stream's duration is its lifetime, never slow.
func isSlowUnary(fields []any, slow time.Duration) bool {
	var unary, isSlow bool
	for i := 0; i+1 < len(fields); i += 2 {
		switch fields[i] {
		case logging.MethodTypeFieldKey:
			unary = fields[i+1] == "unary"
		case durationField:
			ms, ok := fields[i+1].(float64)
			isSlow = ok && ms >= float64(slow.Microseconds())/1000
		}
	}
	return unary && isSlow
}

// withCallInfo and withCallInfoStream wrap the outermost interceptor so
// that every call's context carries an empty guard.CallInfo outside the
// request log, for the guard to name the caller and tenant on the call's
// line (see callLog); wrapping, not chaining, spares each call a layer of
// the chain.
func withCallInfo(next grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return next(guard.WithCallInfo(ctx), req, info, handler)
	}
}

func withCallInfoStream(next grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return next(srv, &callInfoServerStream{ServerStream: ss, ctx: guard.WithCallInfo(ss.Context())}, info, handler)
	}
}

type callInfoServerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *callInfoServerStream) Context() context.Context { return s.ctx }
