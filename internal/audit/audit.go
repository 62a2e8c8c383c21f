// Package audit writes the broker's audit trail: one JSON object per line
// for every token issued, every invalidation and every denied call. A line
// never carries a token, key or secret; a token appears as its Fingerprint.
//
// A Logger is safe for concurrent use and commits lines in groups: one
// writer goroutine writes each batch with a single Write call. Log returns
// once its batch is written, and a failed write fails every call of the
// batch, so a caller that hands out a token only after Log succeeds never
// hands one out without its line. Lines keep the order of their calls.
//
// A line is acknowledged once write(2) returned: a process crash loses none;
// against power loss, SetSyncInterval adds fsync. A write that fails
// part-way is cut off the file Open opened; where that cannot be done (a
// writer given to New), the torn line stays and the next batch starts on a
// new line, so a reader should skip a line that is not valid JSON.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/names"
	"github.com/tokenbroker/tokenbroker/internal/flood"
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
	// Method is the gRPC method, e.g. "/tokenbroker.v1.TokenBrokerService/GetToken",
	// or the HTTP request of the OAuth2 endpoint, e.g. "POST /oauth2/token".
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
	// peer IP without port) that this line stands for, refused since
	// the previous line of that denial; see Logger.LogDenial.
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
	var fp [FingerprintLen]byte
	hex.Encode(fp[:], sum[:FingerprintLen/2])
	return string(fp[:])
}

// Logger writes Records as JSON lines; see the package comment for how
// it batches and what it guarantees.
type Logger struct {
	mu   sync.Mutex
	idle sync.Cond // signalled when the writer goroutine exits; uses mu
	w    io.Writer // written by the writer goroutine only; nil once closed
	file *os.File  // the file Open opened and closes, nil for New: failed writes are undone in it
	now  func() time.Time

	cur     *batch   // lines waiting for the writer; guarded by mu
	spare   []Record // a written batch's records, for reuse; guarded by mu
	running bool     // a writer goroutine is running; guarded by mu
	waiting bool     // it lingers, waiting on wake; guarded by mu
	wake    chan struct{}
	closed  bool // guarded by mu

	// Owned by the writer goroutine. torn: a failed write left a partial
	// line it could not undo; the next batch starts with a newline.
	enc  *encoder
	torn bool

	syncEvery time.Duration // see SetSyncInterval; guarded by mu
	dirty     bool          // written since the last fsync; guarded by mu
	syncTimer *time.Timer   // pending interval fsync; guarded by mu

	denials *flood.Gate[string, Record] // collapses LogDenial's repeats; see SetCollapseInterval
	onError func()                      // see OnWriteError; set before use
}

// batch is a group of lines committed by one Write.
type batch struct {
	recs []Record
	done chan struct{} // closed once the batch is written (or failed)
	err  error         // set before done is closed
}

// SyncEachBatch, given to SetSyncInterval, fsyncs every batch before its
// calls return.
const SyncEachBatch time.Duration = -1

// SetSyncInterval sets when a writer with a Sync method is fsynced: 0
// (default) never; SyncEachBatch before each batch is acknowledged, so a
// power loss loses no acknowledged line; d > 0 within d of a write. Set
// it before the Logger is used.
func (l *Logger) SetSyncInterval(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.syncEvery = d
}

// OnWriteError sets f to be called once for every line that could not be
// written (metrics count them). f runs on the writer goroutine: it must
// not block or call the Logger. Set it before the Logger is used.
func (l *Logger) OnWriteError(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onError = f
}

// New returns a Logger writing to w. It does not close w. Closing it is
// needed only to write pending denial counts: its writer goroutine exits
// once no line has come for 100 ms.
func New(w io.Writer) *Logger {
	l := &Logger{w: w, now: time.Now, enc: newEncoder(), wake: make(chan struct{}, 1)}
	l.idle.L = &l.mu
	l.SetCollapseInterval(DefaultCollapseInterval)
	return l
}

// Open returns a Logger appending to the file at path (created 0600), or
// to standard output for "" or "-". A write that fails part-way is
// truncated away. Close the Logger to close the file.
func Open(path string) (*Logger, error) {
	if path == "" || path == "-" {
		return New(os.Stdout), nil
	}
	f, err := creds.OpenRegular(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: open audit.path: %w", err)
	}
	l := New(f)
	l.file = f
	return l, nil
}

// Log writes r as one line, setting Time to now if it is zero, and
// returns once the line is written (or its write failed). A nil Logger
// discards r.
func (l *Logger) Log(r Record) error {
	if l == nil {
		return nil
	}
	switch {
	case r.Event == EventDeny:
		r = clipDenial(r)
	case len(r.Scopes) > MaxDeniedScopes || len(r.Reason) > maxReasonBytes:
		// Peer-chosen fields are bounded in every line: here to what a
		// valid request holds (a scope named 30,000 times is one scope).
		r.Scopes = clipScopes(r.Scopes, MaxDeniedScopes*names.MaxScopeLen)
		r.Reason = Clip(r.Reason, maxReasonBytes)
	}
	return l.commit(&r)
}

// commit queues r and waits for its batch to be written.
func (l *Logger) commit(r *Record) error {
	l.mu.Lock()
	b, err := l.enqueueLocked(r)
	l.mu.Unlock()
	if err != nil {
		return err
	}
	<-b.done
	return b.err
}

// enqueueLocked adds r to the current batch, with Time set to now if it
// is zero (under the lock, so that times follow the line order), and
// makes sure a writer goroutine runs.
func (l *Logger) enqueueLocked(r *Record) (*batch, error) {
	if l.closed {
		return nil, fmt.Errorf("audit: logger is closed")
	}
	if l.cur == nil {
		l.cur = &batch{recs: l.spare[:0], done: make(chan struct{})}
		l.spare = nil
	}
	b := l.cur
	b.recs = append(b.recs, *r)
	if r.Time.IsZero() {
		b.recs[len(b.recs)-1].Time = l.now()
	}
	if !l.running {
		l.running = true
		go l.run()
	}
	l.wakeLocked()
	return b, nil
}

// wakeLocked wakes the writer if it waits for a line.
func (l *Logger) wakeLocked() {
	if l.waiting {
		l.waiting = false
		select {
		case l.wake <- struct{}{}:
		default: // a wake is pending already
		}
	}
}

// yieldBelow is the batch size under which the writer yields once before
// writing, so that more lines join the batch.
const yieldBelow = 8

// linger is how long the writer waits for a line before it exits. A new
// writer's stack grows on its first line (slog's frames are deep), which
// costs more than the line: under a steady trickle of calls, it stays.
const linger = 100 * time.Millisecond

// maxSpare bounds the bytes of the batch buffer, and of the records
// (about 256 bytes each), kept for reuse.
const maxSpare = 1 << 20

// run is the writer goroutine: it writes batches until none has come
// for linger.
func (l *Logger) run() {
	idle := time.NewTimer(linger)
	defer idle.Stop()
	l.mu.Lock()
	for l.cur != nil || l.lingerLocked(idle) {
		if len(l.cur.recs) < yieldBelow {
			// Let running calls join the batch: one write per dozens of
			// lines under load, for a scheduling round of latency.
			l.mu.Unlock()
			runtime.Gosched()
			l.mu.Lock()
		}
		b := l.cur
		l.cur = nil
		syncEach := l.syncEvery < 0
		l.mu.Unlock()

		p, err := l.encode(b.recs)
		if err == nil {
			err = l.write(p, syncEach)
		}
		b.err = err
		if err != nil && l.onError != nil {
			for range b.recs {
				l.onError()
			}
		}
		close(b.done)
		clear(b.recs) // keep no reference to the calls' strings

		l.mu.Lock()
		if cap(b.recs) <= maxSpare/256 {
			l.spare = b.recs[:0]
		}
		if err == nil && l.syncEvery > 0 {
			l.dirty = true
			if l.syncTimer == nil {
				l.syncTimer = time.AfterFunc(l.syncEvery, l.syncNow)
			}
		}
	}
	l.running = false
	l.idle.Broadcast()
	l.mu.Unlock()
}

// lingerLocked waits up to linger for a line (not after Close) and
// reports whether one came. It unlocks mu while it waits.
func (l *Logger) lingerLocked(idle *time.Timer) bool {
	if l.closed {
		return false
	}
	idle.Reset(linger)
	l.waiting = true
	l.mu.Unlock()
	select {
	case <-l.wake:
	case <-idle.C:
	}
	l.mu.Lock()
	l.waiting = false
	return l.cur != nil
}

// encode returns the lines of recs, in a buffer reused by the next batch.
func (l *Logger) encode(recs []Record) ([]byte, error) {
	if l.enc.buf.Cap() > maxSpare {
		l.enc.buf = bytes.Buffer{}
	}
	l.enc.buf.Reset()
	for i := range recs {
		if err := l.enc.add(&recs[i]); err != nil {
			return nil, fmt.Errorf("audit: encode: %w", err)
		}
	}
	return l.enc.buf.Bytes(), nil
}

// write writes one batch with a single Write call (and fsyncs it if
// syncEach).
func (l *Logger) write(p []byte, syncEach bool) error {
	if l.torn {
		p = append([]byte{'\n'}, p...)
	}
	n, err := l.w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		if n > 0 && !l.undo(int64(n)) {
			l.torn = p[n-1] != '\n'
		}
		return fmt.Errorf("audit: write: %w", err)
	}
	l.torn = false
	if s, ok := l.w.(interface{ Sync() error }); ok && syncEach {
		if err := s.Sync(); err != nil {
			return fmt.Errorf("audit: fsync: %w", err)
		}
	}
	return nil
}

// undo cuts the n bytes that a failed write appended off the file Open
// opened, and reports whether it did. It leaves the file alone unless
// those bytes are still its end.
func (l *Logger) undo(n int64) bool {
	if l.file == nil {
		return false
	}
	end, err := l.file.Seek(0, io.SeekCurrent) // O_APPEND: where the write ended
	if err != nil || end < n {
		return false
	}
	fi, err := l.file.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != end {
		return false
	}
	return l.file.Truncate(end-n) == nil
}

// syncNow is the interval fsync. It runs while the writer may write:
// fsync and write on one file are safe together.
func (l *Logger) syncNow() {
	l.mu.Lock()
	l.syncTimer = nil
	dirty := l.dirty
	l.dirty = false
	w := l.w
	l.mu.Unlock()
	if s, ok := w.(interface{ Sync() error }); ok && dirty {
		_ = s.Sync() // best effort: the lines were acknowledged already
	}
}

// Close writes pending denial counts, waits for every line to be
// written and closes the file Open opened; later Logs fail. It is
// idempotent.
func (l *Logger) Close() error {
	if l == nil {
		return nil
	}
	l.denials.Flush()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.wakeLocked()
	for l.running {
		l.idle.Wait()
	}
	if l.syncTimer != nil {
		l.syncTimer.Stop()
		l.syncTimer = nil
	}
	w, f := l.w, l.file
	l.w = nil
	dirty := l.dirty && l.syncEvery > 0
	l.mu.Unlock()
	if s, ok := w.(interface{ Sync() error }); ok && dirty {
		_ = s.Sync()
	}
	if f != nil {
		return f.Close()
	}
	return nil
}
