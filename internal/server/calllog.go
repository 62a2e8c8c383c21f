package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"

	"github.com/tokenbroker/tokenbroker/internal/flood"
	"github.com/tokenbroker/tokenbroker/internal/guard"
)

// callLog is the request log of the server: one line per finished call
// with method, code, duration, peer, and the caller and tenant the guard
// adds; never a payload (it carries tokens). Successful calls, and calls
// the client cancelled, are logged at debug, unless a unary call took
// slow or longer, which is logged at info with slow=true; failures at
// the levels of go-grpc-middleware (info for client errors, warn for
// unavailable/denied, error for internal errors), with its fields.
//
// The level is decided when the call ends, and the fields are built only
// for a line the logger writes: at the default level, info, a successful
// call builds none. The guard's fields, caller and tenant, come from the
// guard.CallInfo in the call's context.
//
// Lines at info and above are rate limited per status code (callLogRate,
// callLogBurst): one caller looping on a denied call must not fill the
// log pipeline (the audit trail and tokenbroker_denials_total count every
// denial). The next line of a code says how many were dropped before it.
type callLog struct {
	log   *slog.Logger
	sink  logging.Logger
	slow  time.Duration
	limit *flood.Gate[codes.Code, struct{}]
}

func newCallLog(log *slog.Logger, slow time.Duration) *callLog {
	return &callLog{
		log: log, slow: slow,
		sink: logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
			log.Log(ctx, slog.Level(lvl), msg, fields...)
		}),
		limit: flood.New(flood.Config[codes.Code, struct{}]{Every: time.Second / callLogRate, Burst: callLogBurst, MaxKeys: 64}),
	}
}

// level is the level of a call's line.
func level(code codes.Code) logging.Level {
	if code == codes.OK || code == codes.Canceled {
		return logging.LevelDebug
	}
	return logging.DefaultServerCodeToLevel(code)
}

// finished writes the line of a call of m that ended with err after d,
// if the logger wants it.
func (l *callLog) finished(ctx context.Context, ci *guard.CallInfo, m *method, start time.Time, d time.Duration, code codes.Code, err error) {
	lvl := level(code)
	slow := lvl == logging.LevelDebug && m.typ == interceptors.Unary && d >= l.slow // a stream's duration is its lifetime
	if slow {
		lvl = logging.LevelInfo
	}
	if !l.log.Enabled(ctx, slog.Level(lvl)) {
		return
	}
	var dropped int
	if lvl >= logging.LevelInfo {
		ok, n := l.limit.Allow(code, struct{}{})
		if !ok {
			return
		}
		dropped = n
	}
	fields := make(logging.Fields, 0, 28)
	fields = append(fields, logging.SystemTag[0], logging.SystemTag[1],
		logging.ComponentFieldKey, logging.KindServerFieldValue,
		logging.ServiceFieldKey, m.service,
		logging.MethodFieldKey, m.name,
		logging.MethodTypeFieldKey, string(m.typ))
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		fields = append(fields, "peer.address", p.Addr.String())
	}
	fields = append(fields, "grpc.start_time", start.Format(time.RFC3339))
	if dl, ok := ctx.Deadline(); ok {
		fields = append(fields, "grpc.request.deadline", dl.Format(time.RFC3339))
	}
	fields = append(fields, "grpc.code", code.String())
	if err != nil {
		fields = append(fields, "grpc.error", err.Error())
	}
	fields = append(fields, durationField, float64(d.Microseconds())/1000)
	if slow {
		fields = append(fields, "slow", true)
	}
	if dropped > 0 {
		fields = append(fields, "suppressed_before", dropped)
	}
	fields = ci.LogFields(fields)
	l.sink.Log(ctx, lvl, "finished call", fields...)
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

// durationField is the call's duration in milliseconds.
const durationField = "grpc.time_ms"
