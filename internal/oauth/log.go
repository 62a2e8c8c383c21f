package oauth

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/flood"
)

// logEntry is what the request log says of one request: never a value,
// header or body; the tenant only once the caller is authenticated.
type logEntry struct {
	path           string
	peer           authn.Peer
	auth           string // client authentication method
	caller, tenant string
	status         int
	result         string // "ok" or the RFC 6749 error
	elapsed        time.Duration
}

// requestLog writes one line per request at the level of level. Lines at
// info and above are rate limited per result (the audit trail counts every
// refusal); the next line of a result says how many were dropped.
type requestLog struct {
	log   *slog.Logger
	limit *flood.Gate[string, struct{}]
}

// Lines at info and above, per result.
const (
	logRate  = 5 // per second
	logBurst = 20
)

func (l *requestLog) write(ctx context.Context, e logEntry) {
	lvl, slow := level(e)
	if !l.log.Enabled(ctx, lvl) {
		return
	}
	fields := []any{"path", e.path, "status", e.status, "result", e.result, "peer", e.peer.Addr,
		"time_ms", float64(e.elapsed.Microseconds()) / 1000}
	if lvl >= slog.LevelInfo {
		ok, dropped := l.limit.Allow(e.result, struct{}{})
		if !ok {
			return
		}
		if dropped > 0 {
			fields = append(fields, "suppressed_before", dropped)
		}
	}
	if slow {
		fields = append(fields, "slow", true)
	}
	if e.auth != "" {
		fields = append(fields, "client_auth", e.auth)
	}
	if e.caller != "" {
		fields = append(fields, "caller", e.caller, "tenant", e.tenant)
	}
	l.log.Log(ctx, lvl, "oauth token request", fields...)
}

// level is the line's level (debug for successes, info for slow ones and
// client errors, warn for refusals and outages, error for server errors),
// and whether it is a slow success.
func level(e logEntry) (slog.Level, bool) {
	switch {
	case e.status == http.StatusOK && e.elapsed >= slowRequest:
		return slog.LevelInfo, true
	case e.status == http.StatusOK:
		return slog.LevelDebug, false
	case e.status >= 500 && e.status != http.StatusServiceUnavailable:
		return slog.LevelError, false
	case e.status == http.StatusServiceUnavailable, e.status == http.StatusTooManyRequests,
		e.status == http.StatusUnauthorized, e.result == errUnauthorizedClient:
		return slog.LevelWarn, false
	}
	return slog.LevelInfo, false
}
