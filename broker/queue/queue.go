// Package queue runs work items on a bounded pool of goroutines, in the
// order they come, with no goroutine for an item that waits: the broker's
// requests to one identity-provider host and the gRPC server's WatchToken
// sends both use it. It lives under broker/ so that both can.
package queue

import (
	"sync"
	"time"
)

// Queue runs each item added, with the function given to New, on at most
// its workers at a time; the others wait in order. Items of one key run
// in a row: an item whose key still has items waiting joins them (the
// sends of one connection, written together). A worker exits when nothing
// waits, so an idle Queue runs no goroutine.
//
// With a stall period, a worker whose item has run that long leaves the
// pool and another starts in its place, ending when its item does: a
// blocked item holds up the others by at most that period, at the cost
// of a goroutine. Without one, workers bound the items running at once.
//
// A Queue is safe for concurrent use.
type Queue[K comparable, T any] struct {
	run     func(T)
	workers int
	stall   time.Duration

	mu      sync.Mutex
	groups  []*group[K, T] // FIFO from head
	head    int
	pending map[K]*group[K, T] // the groups waiting, by key
	active  int                // workers in the pool (not stalled)
	waiting int                // items added and not yet taken
}

// group is the waiting items of one key.
type group[K comparable, T any] struct {
	key   K
	items []T
	next  int // index of the next item to take
}

// compactAfter is how many taken items a group that never drains keeps
// before its backlog is copied down.
const compactAfter = 1024

// New returns a Queue that runs items with run on at most workers
// goroutines; stall, if positive, is the stall period (see Queue).
func New[K comparable, T any](workers int, stall time.Duration, run func(T)) *Queue[K, T] {
	return &Queue[K, T]{run: run, workers: workers, stall: stall, pending: map[K]*group[K, T]{}}
}

// Add queues item after the waiting items of key; it does not wait.
func (q *Queue[K, T]) Add(key K, item T) {
	q.mu.Lock()
	defer q.mu.Unlock()
	g := q.pending[key]
	if g == nil {
		g = &group[K, T]{key: key}
		q.pending[key] = g
		q.groups = append(q.groups, g)
	}
	g.items = append(g.items, item)
	q.waiting++
	q.growLocked()
}

// Len returns the number of items waiting.
func (q *Queue[K, T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.waiting
}

// growLocked starts a worker if items wait and the pool has room.
func (q *Queue[K, T]) growLocked() {
	if q.active < q.workers && q.waiting > 0 {
		q.active++
		go q.work()
	}
}

// takeLocked returns the next item: the head group's next one.
func (q *Queue[K, T]) takeLocked() (item T, ok bool) {
	if q.waiting == 0 {
		return item, false
	}
	g := q.groups[q.head]
	item = g.items[g.next]
	var zero T
	g.items[g.next] = zero
	g.next++
	q.waiting--
	switch {
	case g.next == len(g.items):
		q.groups[q.head] = nil
		q.head++
		delete(q.pending, g.key)
		if q.head == len(q.groups) {
			q.groups, q.head = q.groups[:0], 0
		}
	case g.next >= compactAfter && 2*g.next >= len(g.items): // a backlog that never drains
		n := copy(g.items, g.items[g.next:])
		clear(g.items[n:])
		g.items, g.next = g.items[:n], 0
	}
	return item, true
}

// worker is one worker's state, guarded by Queue.mu (its stall timer
// reads it).
type worker struct {
	running bool
	started time.Time
	stalled bool // it left the pool; it ends when its item does
}

func (q *Queue[K, T]) work() {
	w := &worker{}
	var timer *time.Timer
	if q.stall > 0 {
		timer = time.AfterFunc(time.Hour, func() { q.stalled(w) })
		timer.Stop()
		defer timer.Stop()
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for !w.stalled { // a stalled worker was replaced and is not counted any more
		item, ok := q.takeLocked()
		if !ok {
			q.active--
			return
		}
		w.running, w.started = true, time.Now()
		q.mu.Unlock()
		if timer != nil {
			timer.Reset(q.stall)
		}
		q.run(item)
		if timer != nil {
			timer.Stop()
		}
		q.mu.Lock()
		w.running = false
	}
}

// stalled takes w out of the pool if its item has run for the stall
// period, and starts another worker in its place.
func (q *Queue[K, T]) stalled(w *worker) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !w.running || w.stalled || time.Since(w.started) < q.stall {
		return // a timer of an earlier item, or the item just ended
	}
	w.stalled = true
	q.active--
	q.growLocked()
}
