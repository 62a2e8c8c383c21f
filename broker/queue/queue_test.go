package queue

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// within fails the test if ch is not closed in 10 s: a bound for a
// failure, not a wait for success.
func within(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not done in 10 s", what)
	}
}

func funcs(workers int, stall time.Duration) *Queue[string, func()] {
	return New[string](workers, stall, func(f func()) { f() })
}

// TestNeverWaitsOnABlockedItem: items blocked (clients that do not read)
// take every worker, and still the next item runs (the stall period adds
// a worker); every item runs once, and no worker is left once the queue
// is empty.
func TestNeverWaitsOnABlockedItem(t *testing.T) {
	const workers = 8
	q := funcs(workers, 10*time.Millisecond)
	release := make(chan struct{})
	var blocked sync.WaitGroup
	for i := range workers + 10 { // every worker blocked, and more waiting
		blocked.Add(1)
		q.Add(fmt.Sprint(i), func() { defer blocked.Done(); <-release }) // a key each
	}
	ran := make(chan struct{})
	q.Add("another", func() { close(ran) })
	within(t, "an item behind blocked ones", ran)
	close(release)
	blocked.Wait()
	idle := make(chan struct{})
	q.Add("idle", func() { close(idle) })
	within(t, "an item once the others ended", idle)
	// goleak (TestMain) checks that the workers have exited.
}

// TestRunsEachItemOnce: a burst much larger than the workers runs every
// item exactly once.
func TestRunsEachItemOnce(t *testing.T) {
	const n = 10000
	var mu sync.Mutex
	seen := make(map[int]int, n)
	var wg sync.WaitGroup
	q := New[int](16, 0, func(i int) {
		defer wg.Done()
		mu.Lock()
		defer mu.Unlock()
		seen[i]++
	})
	for i := range n {
		wg.Add(1)
		q.Add(i%100, i) // 100 keys
	}
	wg.Wait()
	for i := range n {
		if seen[i] != 1 {
			t.Fatalf("item %d ran %d times", i, seen[i])
		}
	}
}

// TestWorkersBoundWhatRuns: without a stall period, no more items run at
// once than there are workers, however long they take.
func TestWorkersBoundWhatRuns(t *testing.T) {
	const workers, n = 3, 50
	var running, peak atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	q := New[struct{}](workers, 0, func(int) {
		defer wg.Done()
		if r := running.Add(1); r > peak.Load() {
			peak.Store(r)
		}
		<-release
		running.Add(-1)
	})
	for i := range n {
		wg.Add(1)
		q.Add(struct{}{}, i)
	}
	if got := q.Len(); got < n-workers {
		t.Errorf("%d items waiting, want at least %d", got, n-workers)
	}
	close(release)
	wg.Wait()
	if p := peak.Load(); p > workers {
		t.Errorf("%d items ran at once, want at most %d", p, workers)
	}
}

// TestRunsInOrder: items wait their turn in the order they were added,
// except that an item joins the items of its key still waiting (one
// worker, so that the order is observable).
func TestRunsInOrder(t *testing.T) {
	var order []string
	var wg sync.WaitGroup
	started, release := make(chan struct{}, 1), make(chan struct{})
	q := New[string](1, 0, func(s string) {
		defer wg.Done()
		started <- struct{}{}
		<-release
		order = append(order, s) // one worker: no other goroutine writes
	})
	wg.Add(5)
	q.Add("a", "a1")
	<-started // a1 runs: no item of key a waits
	for _, item := range [][2]string{{"b", "b1"}, {"a", "a2"}, {"c", "c1"}, {"b", "b2"}} {
		q.Add(item[0], item[1])
	}
	go func() {
		for range 4 {
			<-started
		}
	}()
	close(release)
	wg.Wait()
	if got, want := fmt.Sprint(order), "[a1 b1 b2 a2 c1]"; got != want {
		t.Errorf("order %s, want %s", got, want)
	}
}

// TestNeverStallsBehindBlockedItemsOfOneKey (red team, issue 11): one key
// with more blocked items (clients that do not read) than there are
// workers, then an item of the same key whose client reads: it runs,
// within a few stall periods, and so does another key's.
func TestNeverStallsBehindBlockedItemsOfOneKey(t *testing.T) {
	const workers = 8
	q := funcs(workers, 10*time.Millisecond)
	release := make(chan struct{})
	var blocked sync.WaitGroup
	for range 3 * workers {
		blocked.Add(1)
		q.Add("conn", func() { defer blocked.Done(); <-release })
	}
	same, other := make(chan struct{}), make(chan struct{})
	q.Add("conn", func() { close(same) })
	q.Add("other", func() { close(other) })
	within(t, "the reading item of the same key", same)
	within(t, "the item of another key", other)
	close(release)
	blocked.Wait()
}
