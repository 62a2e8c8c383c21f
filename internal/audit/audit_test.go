package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

func TestFingerprint(t *testing.T) {
	const tok = "eyJhbGciOi.secret.token"
	sum := sha256.Sum256([]byte(tok))
	want := hex.EncodeToString(sum[:])[:12]
	if got := Fingerprint(tok); got != want || len(got) != FingerprintLen {
		t.Fatalf("Fingerprint = %q, want %q", got, want)
	}
	if Fingerprint("") != "" {
		t.Error("Fingerprint of empty token is not empty")
	}
}

func TestLogLine(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	l.now = func() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("CET", 3600)) }
	err := l.Log(Record{
		Event: EventIssue, Method: "/tokenbroker.v1.TokenBrokerService/GetToken",
		Caller: "billing", Identity: "spiffe_id=spiffe://prod/ns/billing/sa/api", Tenant: "acme",
		Scopes: []string{"read:inputs"}, TokenFingerprint: Fingerprint("tok"), Version: 7, Result: ResultOK,
	})
	if err != nil {
		t.Fatal(err)
	}
	line := buf.String()
	if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
		t.Fatalf("not one line: %q", line)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"time": "2026-03-01T11:00:00Z", "event": "issue", "method": "/tokenbroker.v1.TokenBrokerService/GetToken",
		"caller": "billing", "identity": "spiffe_id=spiffe://prod/ns/billing/sa/api", "tenant": "acme",
		"scopes": []any{"read:inputs"}, "token_fingerprint": Fingerprint("tok"), "version": float64(7), "result": "ok",
	}
	if len(got) != len(want) {
		t.Errorf("fields %v, want %v", got, want)
	}
	for k, v := range want {
		if gv, _ := json.Marshal(got[k]); string(gv) != mustJSON(v) {
			t.Errorf("%s = %s, want %s", k, gv, mustJSON(v))
		}
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestEveryLineIsBounded: an issue or error line carries the request's
// scopes, which a caller chooses; one naming a scope 30,000 times (one
// distinct scope, so authorized) is cut like a denial's, with a count.
func TestEveryLineIsBounded(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	defer l.Close()
	scopes := make([]string, 30000)
	for i := range scopes {
		scopes[i] = "read"
	}
	if err := l.Log(Record{Event: EventIssue, Result: ResultError, Tenant: "acme", Scopes: scopes, Reason: strings.Repeat("r", 10000)}); err != nil {
		t.Fatal(err)
	}
	if n := buf.Len(); n > 4096 {
		t.Errorf("the line is %d bytes, want it bounded", n)
	}
	if !strings.Contains(buf.String(), "more") {
		t.Errorf("the line does not say scopes were cut: %.200s", buf.String())
	}
}

func TestOpenAppends0600(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	for i := range 2 {
		l, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Log(Record{Event: EventDeny, Result: ResultDenied, Reason: string(rune('a' + i))}); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if l.Log(Record{}) == nil {
			t.Error("Log after Close succeeded")
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"reason":"a"`) || !strings.Contains(lines[1], `"reason":"b"`) {
		t.Fatalf("file does not hold both lines in order: %q", data)
	}
}

// TestOpenRefusesWhatIsNotAFile: a FIFO or a directory at audit.path is an
// error at once, never an open that waits for a reader (which hung the
// start).
func TestOpenRefusesWhatIsNotAFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	for _, path := range []string{fifo, dir} {
		done := make(chan error, 1)
		go func() {
			l, err := Open(path)
			if err == nil {
				l.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("Open(%s) succeeded", path)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Open(%s) blocked", path)
		}
	}
}

func TestConcurrentLinesStayWhole(t *testing.T) {
	var buf logtest.Buffer
	l := New(&buf)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			_ = l.Log(Record{Event: EventIssue, Caller: strings.Repeat("x", i*10), Result: ResultOK})
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 50 {
		t.Fatalf("%d lines, want 50", len(lines))
	}
	for _, ln := range lines {
		var r Record
		if err := json.Unmarshal([]byte(ln), &r); err != nil {
			t.Fatalf("torn line %q: %v", ln, err)
		}
	}
}

func TestNilLoggerDiscards(t *testing.T) {
	var l *Logger
	if err := l.Log(Record{}); err != nil || l.Close() != nil {
		t.Error("nil Logger is not a no-op")
	}
}

// TestLogDenialCollapses: identical denials from one peer IP (any port)
// cost one line, then one line with their count; a distinct one is
// written at once; peer-chosen fields are clipped.
func TestLogDenialCollapses(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	deny := Record{Method: "/m", Peer: "192.0.2.1:1000", Result: ResultDenied, Code: "Unauthenticated", Reason: "API key not recognised"}
	for i := range 5 {
		r := deny
		r.Peer = fmt.Sprintf("192.0.2.1:%d", 1000+i)
		if err := l.LogDenial(r); err != nil {
			t.Fatal(err)
		}
	}
	other := deny
	other.Tenant = strings.Repeat("t", 1000)
	if err := l.LogDenial(other); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil { // writes the pending count
		t.Fatal(err)
	}
	var lines []Record
	for _, ln := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var r Record
		if err := json.Unmarshal([]byte(ln), &r); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, r)
	}
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), buf.String())
	}
	if lines[0].Count != 0 || lines[0].Peer != "192.0.2.1" || lines[2].Count != 4 || lines[2].Reason != deny.Reason {
		t.Errorf("first %+v, count line %+v; want the denial, then count 4", lines[0], lines[2])
	}
	if n := len(lines[1].Tenant); n > MaxDeniedFieldBytes {
		t.Errorf("tenant of %d bytes, want at most %d", n, MaxDeniedFieldBytes)
	}
}

// TestDenialFloodOneLinePerInterval: a steady flood of one denial costs
// its line, then one line with the count per collapse interval, written
// without waiting for another denial or Close; the counts add up.
func TestDenialFloodOneLinePerInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf logtest.Buffer
		l := New(&buf)
		deny := Record{Method: "/m", Peer: "192.0.2.1:1000", Result: ResultDenied, Code: "Unauthenticated", Reason: "API key not recognised"}
		const calls = 2500 // 100 a second for 25 s
		for range calls {
			if err := l.LogDenial(deny); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		synctest.Wait()
		before := strings.Count(buf.String(), "\n")
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, ln := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			var r Record
			if err := json.Unmarshal([]byte(ln), &r); err != nil {
				t.Fatal(err)
			}
			total += max(r.Count, 1)
		}
		if before != 3 || total != calls {
			t.Errorf("%d lines before Close (want the denial and counts at 10 s and 20 s), accounting for %d denials in all (want %d):\n%s",
				before, total, calls, buf.String())
		}
	})
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// TestOnWriteErrorCountsLostLines: every line that cannot be written,
// and only those, reaches the hook (the broker's metrics count them).
func TestOnWriteErrorCountsLostLines(t *testing.T) {
	var lost int
	bad := New(failWriter{})
	bad.OnWriteError(func() { lost++ })
	for range 3 {
		if err := bad.Log(Record{Event: EventIssue, Result: ResultOK}); err == nil {
			t.Fatal("Log to a failing writer succeeded")
		}
	}
	good := New(io.Discard)
	good.OnWriteError(func() { lost += 100 })
	if err := good.Log(Record{Event: EventIssue, Result: ResultOK}); err != nil {
		t.Fatal(err)
	}
	if lost != 3 {
		t.Errorf("hook counted %d lost lines, want 3", lost)
	}
}

// prefixThenFail accepts the first limit bytes of the next write, then
// fails it (as a full disk does); later writes succeed.
type prefixThenFail struct {
	bytes.Buffer
	limit int
	armed bool
}

func (w *prefixThenFail) Write(p []byte) (int, error) {
	if w.armed {
		w.armed = false
		n, _ := w.Buffer.Write(p[:min(w.limit, len(p))])
		return n, syscall.ENOSPC
	}
	return w.Buffer.Write(p)
}

// Issue 7 red team §4: on ENOSPC a short write left
// `{"time":…,"event":"issue","method"` and the next record (audit_gap)
// was glued onto it. Every complete record is now on a line of its own.
func TestTornWriteDoesNotGlueTheNextRecord(t *testing.T) {
	w := &prefixThenFail{limit: 40, armed: true}
	l := New(w)
	if err := l.Log(Record{Event: EventIssue, Method: "/tokenbroker.v1.TokenBrokerService/GetToken", Tenant: "acme"}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("torn write: err %v, want ENOSPC", err)
	}
	for _, tenant := range []string{"after-1", "after-2"} {
		if err := l.Log(Record{Event: EventIssue, Tenant: tenant}); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimSuffix(w.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want the torn prefix and two records:\n%s", len(lines), w.String())
	}
	if json.Valid([]byte(lines[0])) || !strings.HasPrefix(lines[0], `{"time":`) {
		t.Errorf("first line %q, want the torn prefix", lines[0])
	}
	for i, want := range []string{"after-1", "after-2"} {
		var r Record
		if err := json.Unmarshal([]byte(lines[i+1]), &r); err != nil || r.Tenant != want {
			t.Errorf("line %d %q: %v, tenant %q; want a complete record for %s", i+2, lines[i+1], err, r.Tenant, want)
		}
	}
}

// TestDenialFloodBytesBounded (issue D6): one caller sending distinct
// denied requests with 32 long scopes each writes a bounded number of
// bytes per interval: at most maxCollapseKeys itemised lines, each with
// its scopes clipped to MaxDeniedScopesBytes in total, then one overflow
// line with the count.
func TestDenialFloodBytesBounded(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	l.SetCollapseInterval(time.Hour) // one interval for the whole test
	const calls = 3000
	for i := range calls {
		scopes := make([]string, 32)
		for j := range scopes {
			scopes[j] = fmt.Sprintf("scope-%d-%d-%s", i, j, strings.Repeat("x", 110))
		}
		r := Record{Method: "/tokenbroker.v1.TokenBrokerService/GetToken", Peer: "192.0.2.1:1000", Caller: "mallory",
			Tenant: "acme", Scopes: scopes, Result: ResultDenied, Code: "PermissionDenied",
			Reason: fmt.Sprintf("caller \"mallory\" may not request scope %q", scopes[0])}
		if err := l.LogDenial(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != maxCollapseKeys+1 {
		t.Errorf("%d lines, want %d itemised and one overflow line", len(lines), maxCollapseKeys+1)
	}
	const perLine = 1200
	if n := buf.Len(); n > (maxCollapseKeys+1)*perLine {
		t.Errorf("%d bytes written for %d denials in one interval, want at most %d", n, calls, (maxCollapseKeys+1)*perLine)
	}
	var total int
	for _, ln := range lines {
		var r Record
		if err := json.Unmarshal([]byte(ln), &r); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, s := range r.Scopes {
			n += len(s)
		}
		if n > MaxDeniedScopesBytes {
			t.Errorf("scopes of %d bytes on one line, want at most %d: %q", n, MaxDeniedScopesBytes, r.Scopes)
		}
		total += max(r.Count, 1)
	}
	if total != calls {
		t.Errorf("lines account for %d denials, want %d", total, calls)
	}
}

func TestClipScopes(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{[]string{"a", "b"}, []string{"a", "b"}},
		{[]string{strings.Repeat("a", 100), strings.Repeat("b", 100)}, []string{strings.Repeat("a", 100), strings.Repeat("b", 15) + "…"}},
		{[]string{strings.Repeat("a", 120), "b", "c"}, []string{strings.Repeat("a", 120), "b", "c"}},
		{[]string{strings.Repeat("a", 120), "b", "c", "dddddddddddd"}, []string{strings.Repeat("a", 110), "…+3 more"}[:0]},
		{[]string{strings.Repeat("a", 60), strings.Repeat("b", 60), "cccccccccc", "d"}, []string{strings.Repeat("a", 60), strings.Repeat("b", 55) + "…", "…+2 more"}[:0]},
	} {
		got := clipScopes(tc.in, MaxDeniedScopesBytes)
		n := 0
		for _, s := range got {
			n += len(s)
		}
		if n > MaxDeniedScopesBytes {
			t.Errorf("clipScopes(%q) = %d bytes", tc.in, n)
		}
		if len(tc.want) > 0 && !slices.Equal(got, tc.want) {
			t.Errorf("clipScopes(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if len(tc.want) == 0 && !strings.HasPrefix(got[len(got)-1], "…+") {
			t.Errorf("clipScopes(%q) = %q, want a marker of the dropped scopes", tc.in, got)
		}
	}
}

// TestDenialKeyDistinguishesEveryField: denials that differ in any field
// but Time and Count, or only in how their text splits into fields,
// are not collapsed into one another.
func TestDenialKeyDistinguishesEveryField(t *testing.T) {
	base := Record{Event: EventDeny, Method: "/m", Peer: "192.0.2.1", Tenant: "acme", Scopes: []string{"a", "b"},
		Result: ResultDenied, Code: "PermissionDenied", Reason: "no"}
	keys := map[string]string{denialKey(&base): "base"}
	add := func(name string, r Record) {
		t.Helper()
		if k := denialKey(&r); keys[k] != "" {
			t.Errorf("%s has the key of %s", name, keys[k])
		} else {
			keys[k] = name
		}
	}
	rt := reflect.TypeFor[Record]()
	for i := range rt.NumField() {
		f := rt.Field(i)
		r := base
		r.Scopes = slices.Clone(base.Scopes)
		v := reflect.ValueOf(&r).Elem().Field(i)
		switch f.Type.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Uint64:
			v.SetUint(7)
		case reflect.Slice:
			r.Scopes = append(r.Scopes, "c")
		default: // Time, Count: not part of what makes denials identical
			if k := denialKey(&r); keys[k] != "base" {
				t.Errorf("changing %s changed the key", f.Name)
			}
			continue
		}
		add(f.Name, r)
	}
	split := base
	split.Scopes = []string{"a:b"}
	add("scopes a:b", split)
	shifted := base
	shifted.Tenant, shifted.Reason = "", "acme"
	add("tenant moved to reason", shifted)
}
