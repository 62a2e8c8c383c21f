// Package audit writes the broker's audit trail: one JSON object per line
// for every token issued, every invalidation and every denied call.
//
// A line never carries a token, key or secret: a token appears only as its
// Fingerprint, the first 12 hex digits of its SHA-256, which is enough to
// match it with the token_sha256 a client sends to InvalidateToken.
//
// A Logger is safe for concurrent use; each line is written with a single
// Write call. A write that fails part-way (a full disk) can leave a torn,
// partial line; the next record then starts with a newline, so every
// complete record is on a line of its own, and a reader should skip a
// line that is not valid JSON (it is such a torn remainder).
package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Event kinds.
const (
	EventIssue      = "issue"      // a token was handed out (GetToken, WatchToken)
	EventInvalidate = "invalidate" // InvalidateToken
	EventDeny       = "deny"       // a call refused by authentication, policy or limits
	// EventGap follows audit writes that failed: it says how many, since
	// when. The tokens they would have recorded were not handed out.
	EventGap = "audit_gap"
)

// Results.
const (
	ResultOK     = "ok"
	ResultDenied = "denied"
	ResultError  = "error"
)

// Record is one audit line. Empty fields are omitted.
type Record struct {
	Time  time.Time `json:"time"`
	Event string    `json:"event"`
	// Method is the gRPC method, e.g. "/tokenbroker.v1.TokenBrokerService/GetToken".
	Method string `json:"method,omitempty"`
	// Caller is the policy name of the caller; empty when unauthenticated.
	Caller string `json:"caller,omitempty"`
	// Identity is how the caller authenticated, e.g.
	// "spiffe_id=spiffe://prod/ns/billing/sa/api" or "api_key".
	Identity string   `json:"identity,omitempty"`
	Peer     string   `json:"peer,omitempty"`
	Tenant   string   `json:"tenant,omitempty"`
	Scopes   []string `json:"scopes,omitempty"`
	// TokenFingerprint is Fingerprint of the issued token.
	TokenFingerprint string `json:"token_fingerprint,omitempty"`
	// RejectedFingerprint is the start of the token_sha256 an
	// InvalidateToken call reported as rejected.
	RejectedFingerprint string `json:"rejected_fingerprint,omitempty"`
	Version             uint64 `json:"version,omitempty"`
	Result              string `json:"result"`
	// Code is the gRPC status code name when Result is not ok.
	Code   string `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Count, when set, is the number of identical denials (same fields,
	// peer IP without port) that this line stands for, refused in the
	// collapse interval ending at Time; see Logger.LogDenial.
	Count int `json:"count,omitempty"`
}

// FingerprintLen is the number of hex digits in a fingerprint.
const FingerprintLen = 12

// Fingerprint returns the first 12 hex digits of the SHA-256 of an access
// token, or "" for an empty token.
func Fingerprint(accessToken string) string {
	if accessToken == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(accessToken))
	return hex.EncodeToString(sum[:])[:FingerprintLen]
}

// Logger writes Records as JSON lines.
type Logger struct {
	mu     sync.Mutex
	w      io.Writer
	closer io.Closer
	now    func() time.Time
	// torn reports that the last write left a partial line (a short
	// write, e.g. on ENOSPC): the next record starts with a newline, so
	// that every complete record is on a line of its own.
	torn bool

	collapse collapser // guarded by mu
	onError  func()    // guarded by mu; see OnWriteError
}

// OnWriteError sets f to be called once for every line that could not be
// written (metrics count them). f runs with the Logger locked: it must
// not block or call the Logger. Set it before the Logger is used.
func (l *Logger) OnWriteError(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onError = f
}

// New returns a Logger writing to w. It does not close w.
func New(w io.Writer) *Logger {
	return &Logger{w: w, now: time.Now, collapse: collapser{interval: DefaultCollapseInterval}}
}

// Open returns a Logger appending to the file at path, created with mode
// 0600 if missing; "" or "-" means standard output. Close the Logger to
// close the file.
func Open(path string) (*Logger, error) {
	if path == "" || path == "-" {
		return New(os.Stdout), nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: open audit.path: %w", err)
	}
	l := New(f)
	l.closer = f
	return l, nil
}

// Log writes r as one line, setting Time to now if it is zero. A nil
// Logger discards r.
func (l *Logger) Log(r Record) error {
	if l == nil {
		return nil
	}
	if r.Event == EventDeny {
		r = clipDenial(r)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.writeLocked(r)
}

func (l *Logger) writeLocked(r Record) error {
	err := l.encodeLocked(r)
	if err != nil && l.onError != nil {
		l.onError()
	}
	return err
}

func (l *Logger) encodeLocked(r Record) error {
	if r.Time.IsZero() {
		r.Time = l.now()
	}
	r.Time = r.Time.UTC()
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	b = append(b, '\n')
	if l.w == nil {
		return fmt.Errorf("audit: logger is closed")
	}
	if l.torn {
		b = append([]byte{'\n'}, b...)
	}
	n, err := l.w.Write(b)
	if n > 0 {
		l.torn = b[n-1] != '\n'
	}
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("audit: write: %w", err)
	}
	return nil
}

// Close closes the file Open opened; later Logs fail. It is idempotent.
func (l *Logger) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked(true)
	c := l.closer
	l.w, l.closer = nil, nil
	if c != nil {
		return c.Close()
	}
	return nil
}
