package audit

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/test/fulldisk"
)

// TestFullDiskLeavesNoPartialBatch (issue 19 §3): when the audit file
// stops growing part-way through a batch (RLIMIT_FSIZE: the kernel writes
// what fits and fails the rest, as a full disk does), the file is cut
// back to where the batch began: no torn line, and no complete line of a
// call that failed. Once the file can grow, lines follow as usual.
func TestFullDiskLeavesNoPartialBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	if err := l.Log(Record{Event: EventIssue, Tenant: "before", Result: ResultOK}); err != nil {
		t.Fatal(err)
	}
	whole := size() // one line, as long as each line below within a few bytes

	for _, tc := range []struct {
		name  string
		room  int64 // bytes the file may still grow
		lines int
	}{
		{"cut inside the line", 40, 1},
		{"cut after the first line of a batch", whole + 10, 3},
		{"no room at all", 0, 1},
	} {
		before := size()
		lift := fulldisk.Limit(t, before+tc.room)
		// Queue the lines under the lock, so that one write carries them.
		l.mu.Lock()
		var b *batch
		for range tc.lines {
			if b, err = l.enqueueLocked(&Record{Event: EventIssue, Tenant: "failed", Result: ResultOK}); err != nil {
				l.mu.Unlock()
				t.Fatal(err)
			}
		}
		l.mu.Unlock()
		<-b.done
		got := size()
		lift()
		if !errors.Is(b.err, syscall.EFBIG) {
			t.Errorf("%s: batch error %v, want EFBIG", tc.name, b.err)
		}
		if got != before {
			t.Errorf("%s: file is %d bytes after the failed write, want %d (as before it)", tc.name, got, before)
		}
	}

	if err := l.Log(Record{Event: EventIssue, Tenant: "after", Result: ResultOK}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tenants []string
	for _, ln := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		var r Record
		if err := json.Unmarshal([]byte(ln), &r); err != nil {
			t.Errorf("line %q is not a whole record", ln)
			continue
		}
		tenants = append(tenants, r.Tenant)
	}
	if strings.Join(tenants, ",") != "before,after" {
		t.Errorf("records for %q, want before,after", tenants)
	}
}
