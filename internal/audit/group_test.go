package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// gateWriter holds its first Write until release is closed, so that
// calls pile up behind it; writes counts Write calls; failNext fails the
// next write after the first.
type gateWriter struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	writes   int
	entered  chan struct{}
	release  chan struct{}
	failNext bool
	syncs    atomic.Int32
}

func newGateWriter() *gateWriter {
	return &gateWriter{entered: make(chan struct{}), release: make(chan struct{})}
}

func (w *gateWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.writes++
	first := w.writes == 1
	fail := !first && w.failNext
	w.mu.Unlock()
	if first {
		close(w.entered)
		<-w.release
	}
	if fail {
		return 0, syscall.EIO
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *gateWriter) Sync() error { w.syncs.Add(1); return nil }

// startBlocked logs one line, which the writer holds, then n more from n
// goroutines; it returns once all n are queued behind the first.
func startBlocked(t *testing.T, l *Logger, w *gateWriter, n int) (first chan error, rest chan error) {
	t.Helper()
	first, rest = make(chan error, 1), make(chan error, n)
	go func() { first <- l.Log(Record{Event: EventIssue, Tenant: "first", Result: ResultOK}) }()
	<-w.entered
	for i := range n {
		go func() { rest <- l.Log(Record{Event: EventIssue, Tenant: fmt.Sprint("t", i), Result: ResultOK}) }()
	}
	// Wait until all n lines are in the pending batch.
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		queued := 0
		if l.cur != nil {
			queued = len(l.cur.recs)
		}
		l.mu.Unlock()
		if queued == n {
			return first, rest
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d lines queued", queued, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestGroupCommitOneWritePerBatch: calls that arrive while a write is
// in flight are written together, with one Write, and each returns only
// after that write.
func TestGroupCommitOneWritePerBatch(t *testing.T) {
	w := newGateWriter()
	l := New(w)
	const n = 50
	first, rest := startBlocked(t, l, w, n)
	select {
	case err := <-rest:
		t.Fatalf("a call returned (%v) before its line was written", err)
	default:
	}
	close(w.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-rest; err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if w.writes != 2 {
		t.Errorf("%d writes for %d lines, want 2 (the first line, then one batch)", w.writes, n+1)
	}
	lines := strings.Split(strings.TrimSuffix(w.buf.String(), "\n"), "\n")
	if len(lines) != n+1 {
		t.Fatalf("%d lines, want %d", len(lines), n+1)
	}
	var prev time.Time
	for _, ln := range lines {
		var r Record
		if err := json.Unmarshal([]byte(ln), &r); err != nil {
			t.Fatalf("line %q: %v", ln, err)
		}
		if r.Time.Before(prev) {
			t.Errorf("times out of line order: %v after %v", r.Time, prev)
		}
		prev = r.Time
	}
}

// TestFailedBatchFailsEveryCall: when a batch's write fails, every call
// in it fails (no token without its line) and each line is counted.
func TestFailedBatchFailsEveryCall(t *testing.T) {
	w := newGateWriter()
	w.failNext = true
	l := New(w)
	var lost atomic.Int32
	l.OnWriteError(func() { lost.Add(1) })
	const n = 20
	first, rest := startBlocked(t, l, w, n)
	close(w.release)
	if err := <-first; err != nil {
		t.Fatalf("first line: %v", err)
	}
	for range n {
		if err := <-rest; !errors.Is(err, syscall.EIO) {
			t.Errorf("call in the failed batch returned %v, want EIO", err)
		}
	}
	if got := lost.Load(); got != n {
		t.Errorf("OnWriteError counted %d lines, want %d", got, n)
	}
}

// TestSyncEachBatch: with SyncEachBatch, a call returns only after the
// file was fsynced; by default there is no fsync.
func TestSyncEachBatch(t *testing.T) {
	for _, tc := range []struct {
		every time.Duration
		want  int32
	}{{0, 0}, {SyncEachBatch, 3}} {
		w := newGateWriter()
		close(w.release)
		l := New(w)
		l.SetSyncInterval(tc.every)
		for range 3 {
			if err := l.Log(Record{Event: EventIssue, Result: ResultOK}); err != nil {
				t.Fatal(err)
			}
		}
		if got := w.syncs.Load(); got != tc.want {
			t.Errorf("interval %v: %d fsyncs after 3 sequential lines, want %d", tc.every, got, tc.want)
		}
	}
}

// TestSyncInterval: with a positive interval, written lines are fsynced
// within it, without a further call.
func TestSyncInterval(t *testing.T) {
	w := newGateWriter()
	close(w.release)
	l := New(w)
	l.SetSyncInterval(10 * time.Millisecond)
	if err := l.Log(Record{Event: EventIssue, Result: ResultOK}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for w.syncs.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no fsync within 10 s of a write with a 10 ms interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

const crashEnv = "AUDIT_CRASH_CHILD"

// TestCrashLosesNoAcknowledgedLine runs a child that logs from several
// goroutines and prints each acknowledged line's id; it is SIGKILLed
// mid-stream. Every acknowledged line must be in the file, each
// goroutine's lines in the order it logged them.
func TestCrashLosesNoAcknowledgedLine(t *testing.T) {
	if path := os.Getenv(crashEnv); path != "" {
		crashChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashLosesNoAcknowledgedLine$")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	acked := map[string]bool{}
	for sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
			acked[id] = true
			if len(acked) == 2000 {
				_ = cmd.Process.Kill() // SIGKILL: no deferred flush runs
				break
			}
		}
	}
	for sc.Scan() { // acknowledgements printed before the kill landed
		if id, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
			acked[id] = true
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed (it logs until killed)", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	inFile := map[string]bool{}
	last := map[string]int{}
	lines := strings.Split(string(data), "\n")
	for i, ln := range lines {
		var r Record
		if err := json.Unmarshal([]byte(ln), &r); err != nil {
			if i >= len(lines)-1 {
				continue // the last line may be torn by the kill, or empty
			}
			t.Fatalf("line %d %q is not a record: %v", i+1, ln, err)
		}
		worker, seq, _ := strings.Cut(r.Tenant, "-")
		n, _ := strconv.Atoi(seq)
		if p, ok := last[worker]; ok && n != p+1 {
			t.Errorf("worker %s: line %d follows %d", worker, n, p)
		}
		last[worker] = n
		inFile[r.Tenant] = true
	}
	missing := 0
	for id := range acked {
		if !inFile[id] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged lines are not in the file", missing, len(acked))
	}
	t.Logf("%d acknowledged, %d in the file", len(acked), len(inFile))
}

func crashChild(path string) {
	l, err := Open(path)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex // one ack line at a time on stdout
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				if err := l.Log(Record{Event: EventIssue, Tenant: id, Result: ResultOK}); err != nil {
					os.Exit(3)
				}
				mu.Lock()
				fmt.Println("ack", id)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// TestWriterLingersThenExits: the writer goroutine serves lines that
// come within linger of each other, exits after linger without one, and
// Close ends a lingering writer at once.
func TestWriterLingersThenExits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(io.Discard)
		running := func() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.running }
		for range 3 {
			if err := l.Log(Record{Event: EventIssue, Result: ResultOK}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(linger / 2)
			synctest.Wait()
			if !running() {
				t.Fatal("the writer exited within linger of a line")
			}
		}
		time.Sleep(linger)
		synctest.Wait()
		if running() {
			t.Fatal("the writer still runs linger after the last line")
		}
		if err := l.Log(Record{Event: EventIssue, Result: ResultOK}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 0 || running() {
			t.Errorf("Close took %v with a lingering writer (running %v), want at once", d, running())
		}
	})
}
