package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc/codes"
)

// callLog returns the request log of the server: one line per finished
// call with method, code, duration, peer, and the caller and tenant the
// guard adds; never a payload (it carries tokens). Successful calls, and
// calls the client cancelled, are logged at debug, unless a unary call
// took slow or longer, which is logged at info with slow=true; failures
// at the levels of go-grpc-middleware (info for client errors, warn for
// unavailable/denied, error for internal errors).
func callLog(log *slog.Logger, slow time.Duration) (logging.Logger, []logging.Option) {
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		if lvl == logging.LevelDebug && isSlowUnary(fields, slow) {
			lvl = logging.LevelInfo
			fields = append(fields, "slow", true)
		}
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
