package guard

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/internal/audit"
)

// errAuditUnavailable is returned instead of a token whose audit line
// could not be written.
var errAuditUnavailable = status.Error(codes.Unavailable,
	"the broker cannot write its audit trail, so it hands out no token; retry later or another replica (its operator must check audit.path: disk full or read-only?)")

// auditState tracks whether audit writes fail.
type auditState struct {
	hook    func(failing bool)
	mu      sync.Mutex // also orders hook calls
	failing bool
	failed  int
	since   time.Time
}

// auditLog writes r. A failure is logged and returned: a token whose
// line fails must not be handed out.
func (g *Guard) auditLog(ctx context.Context, r audit.Record) error {
	err := g.audit.Log(r)
	g.noteAudit(ctx, err)
	return err
}

// auditDenial writes a denial, collapsing repeats (audit.LogDenial).
func (g *Guard) auditDenial(ctx context.Context, r audit.Record) {
	g.noteAudit(ctx, g.audit.LogDenial(r))
}

// noteAudit records the outcome of a write; the first success after
// failures writes an audit_gap line saying how many lines are missing.
func (g *Guard) noteAudit(ctx context.Context, err error) {
	s := &g.auditState
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if !s.failing {
			s.failing, s.since, s.failed = true, time.Now(), 0
			if s.hook != nil {
				s.hook(true)
			}
			g.log.ErrorContext(ctx, "audit write failed; no token is handed out until audit writes succeed again", "error", err)
		}
		s.failed++
		return
	}
	if !s.failing {
		return
	}
	g.recoveredLocked(ctx)
}

// recoveredLocked ends a failing period with an audit_gap line; if that
// write fails too, the period goes on.
func (g *Guard) recoveredLocked(ctx context.Context) bool {
	s := &g.auditState
	gap := audit.Record{Event: audit.EventGap, Result: audit.ResultError,
		Reason: fmt.Sprintf("%d audit writes failed since %s; the tokens they recorded were not handed out", s.failed, s.since.UTC().Format(time.RFC3339))}
	if err := g.audit.Log(gap); err != nil {
		return false
	}
	s.failing = false
	if s.hook != nil {
		s.hook(false)
	}
	g.log.InfoContext(ctx, "audit writes succeed again", "failed_writes", s.failed)
	return true
}

// RetryAudit, while audit writes fail, tries to write the audit_gap line
// and reports whether the trail is writable. Calls that hand out tokens
// retry by themselves; this lets a broker that gets no calls (its health
// took it out of the load balancer) come back.
func (g *Guard) RetryAudit(ctx context.Context) bool {
	s := &g.auditState
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.failing || g.recoveredLocked(ctx)
}

// WatchAudit calls RetryAudit every interval until ctx ends.
func (g *Guard) WatchAudit(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.RetryAudit(ctx)
		}
	}
}
