package flood_test

import (
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/tokenbroker/tokenbroker/internal/flood"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// reports collects what a Gate reports.
type reports struct {
	mu    sync.Mutex
	lines int
	byKey map[string]int
	first map[string]int // the V reported with each key
}

func (r *reports) report(k string, first int, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byKey == nil {
		r.byKey, r.first = map[string]int{}, map[string]int{}
	}
	r.lines++
	r.byKey[k] += n
	r.first[k] = first
}

// get returns the reports so far and the count reported for k.
func (r *reports) get(k string) (lines, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lines, r.byKey[k]
}

// TestHeldCountRidesOnNextPass: without Report (the request log), a
// burst passes, the rest is held, and the next event the bucket lets
// through carries the held count.
func TestHeldCountRidesOnNextPass(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := flood.New(flood.Config[string, int]{Every: 200 * time.Millisecond, Burst: 20, MaxKeys: 8})
		passed := 0
		for range 100 {
			if ok, held := g.Allow("NotFound", 0); ok {
				passed++
				if held != 0 {
					t.Fatalf("a pass of the burst carries %d held", held)
				}
			}
		}
		if passed != 20 {
			t.Fatalf("%d of 100 passed at once, want the burst of 20", passed)
		}
		if ok, _ := g.Allow("Internal", 0); !ok {
			t.Error("another key's first event was held")
		}
		time.Sleep(200 * time.Millisecond)
		if ok, held := g.Allow("NotFound", 0); !ok || held != 80 {
			t.Errorf("after one interval: pass %v held %d, want true 80", ok, held)
		}
		if ok, held := g.Allow("NotFound", 0); ok || held != 0 {
			t.Errorf("right after: pass %v held %d, want false 0", ok, held)
		}
		time.Sleep(200 * time.Millisecond)
		if ok, held := g.Allow("NotFound", 0); !ok || held != 1 {
			t.Errorf("one interval later: pass %v held %d, want true 1 (only the one held since)", ok, held)
		}
	})
}

// TestSteadyFloodOneLinePerInterval: with Report (audit denials), the
// first event passes, then a steady flood of the key costs one report
// per interval, and the reports account for every held event.
func TestSteadyFloodOneLinePerInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r reports
		g := flood.New(flood.Config[string, int]{Every: 10 * time.Second, Burst: 1, MaxKeys: 8, Report: r.report})
		const events = 3500 // 100 a second for 35 s
		passed := 0
		for i := range events {
			if ok, _ := g.Allow("deny", i+1); ok {
				passed++
			}
			time.Sleep(10 * time.Millisecond)
		}
		synctest.Wait()
		if lines, _ := r.get("deny"); passed != 1 || lines != 3 {
			t.Errorf("35 s of flood: %d passed and %d reports, want 1 and 3 (at 10, 20, 30 s)", passed, lines)
		}
		time.Sleep(6 * time.Second) // the last events' report, at 40 s
		synctest.Wait()
		if lines, n := r.get("deny"); lines != 4 || passed+n != events {
			t.Errorf("%d reports; passes and reports account for %d events, want 4 and %d", lines, passed+n, events)
		}
		r.mu.Lock()
		if r.first["deny"] != 1 {
			t.Errorf("reports carry the V of event %d, want the first event's", r.first["deny"])
		}
		r.mu.Unlock()
		// Idle for an interval after its report, the key passes again.
		time.Sleep(10 * time.Second)
		if ok, _ := g.Allow("deny", 0); !ok {
			t.Error("an idle key's event was held")
		}
	})
}

// TestBurstZeroReportsEveryInterval: Burst 0 (refusals before a request)
// lets nothing through and reports the count once per interval.
func TestBurstZeroReportsEveryInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r reports
		g := flood.New(flood.Config[string, int]{Every: time.Second, Report: r.report})
		for range 250 { // 2.5 s
			if ok, _ := g.Allow("", 0); ok {
				t.Fatal("an event passed with Burst 0")
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if lines, n := r.get(""); lines != 3 || n != 250 {
			t.Errorf("%d reports of %d events, want 3 of 250", lines, n)
		}
	})
}

// TestMaxKeysOverflow: beyond MaxKeys, events of new keys are held
// under the zero key; once the tracked keys are idle they are forgotten
// and new keys pass again.
func TestMaxKeysOverflow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r reports
		g := flood.New(flood.Config[string, int]{Every: 10 * time.Second, Burst: 1, MaxKeys: 4, Report: r.report})
		passed := 0
		for i := range 100 {
			if ok, _ := g.Allow(fmt.Sprint("k", i), i); ok {
				passed++
			}
		}
		g.Flush()
		if lines, n := r.get(""); passed != 4 || n != 96 || lines != 1 {
			t.Errorf("%d passed, %d held on %d reports under the zero key; want 4, 96 on 1", passed, n, lines)
		}
		time.Sleep(10 * time.Second)
		if ok, _ := g.Allow("new", 0); !ok {
			t.Error("a new key is held after the others went idle")
		}
	})
}

// TestConcurrentAllowAccountsForAll: under -race, concurrent events are
// each either let through or reported exactly once.
func TestConcurrentAllowAccountsForAll(t *testing.T) {
	var r reports
	g := flood.New(flood.Config[string, int]{Every: time.Millisecond, Burst: 3, MaxKeys: 2, Report: r.report})
	var passed sync.Map
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			n := 0
			for i := range 2000 {
				if ok, _ := g.Allow(fmt.Sprint("k", (w+i)%3), 0); ok {
					n++
				}
			}
			passed.Store(w, n)
		})
	}
	wg.Wait()
	g.Flush()
	total := 0
	passed.Range(func(_, v any) bool { total += v.(int); return true })
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.byKey {
		total += n
	}
	if total != 8*2000 {
		t.Errorf("passes and reports account for %d events, want %d", total, 8*2000)
	}
}

// TestFlushWaitsForReportsInFlight: Flush returns only after the counts
// the timer is reporting are delivered (audit.Logger.Close relies on it
// to write every pending count before the trail closes).
func TestFlushWaitsForReportsInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	g := flood.New(flood.Config[string, int]{Every: time.Millisecond, Burst: 1, MaxKeys: 2, Report: func(string, int, int) {
		once.Do(func() { close(entered); <-release })
	}})
	g.Allow("k", 0)
	g.Allow("k", 0) // held: the timer reports it
	<-entered
	flushed := make(chan struct{})
	go func() { g.Flush(); close(flushed) }()
	select {
	case <-flushed:
		t.Error("Flush returned while the timer's report was in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-flushed
}
