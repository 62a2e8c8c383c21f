package guard

import (
	"context"
	"sync"

	"google.golang.org/grpc/tap"
)

// Tap admits a call when its HEADERS arrive, before grpc-go reads a
// message (grpc.InTapHandle, server.Config.Tap): it refuses a token call
// whose API key does not verify, takes the call's slot until the call
// ends, and hands the proof on in ctx. Without it calls are not capped
// (the guard logs that once).
func (g *Guard) Tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	conn := g.conns.of(ctx)
	p := conn.peer
	pr := conn.prove(credentialsOf(info.Header))
	pol := g.holder.Load()
	token := guarded(info.FullMethodName)
	var c Caller
	if err := g.authenticate(&c, pol, p, &pr); err != nil {
		if pr.keySent && !pol.Empty() && token {
			return nil, g.deny(ctx, info.FullMethodName, &c, target{}, g.charge(c.Peer, err))
		}
		c.Name = "" // counted by its IP; the interceptors refuse a token call
	}
	ip := peerIP(c.Peer)
	err := g.admit(c.Name, ip)
	if err != nil && g.pending.sweep() > 0 {
		err = g.admit(c.Name, ip) // slots of calls that ended unclaimed came back
	}
	if err != nil {
		return nil, g.deny(ctx, info.FullMethodName, &c, target{}, err)
	}
	a := &admittedContext{Context: ctx, g: g, caller: c.Name, ip: ip, conn: conn, proof: pr}
	g.pending.add(a)
	return a, nil
}

// admitted returns what the tap admitted the call of ctx with, or nil.
func (g *Guard) admitted(ctx context.Context) *admittedContext {
	if a, ok := ctx.Value(admittedKey{}).(*admittedContext); ok && a.g == g {
		return a
	}
	return nil
}

// claim takes the release of a's slot over, for the interceptor to give
// it back when the call returns. False if a is nil or its slot was
// given back already (its stream ended before, see pending.sweep).
func (a *admittedContext) claim() bool { return a != nil && a.g.pending.remove(a) }

// pending are the calls the tap admitted that no interceptor has claimed
// yet. The guard's interceptors give a call's slot back when it returns;
// a call that never reaches them (grpc-go refuses it first: a method or
// compressor it does not know, a deadline passed already) is given back
// by sweep, once its stream ended, when a call finds its cap reached
// and every sweepEvery admissions. Without a registration per call on
// its context (context.AfterFunc was 5 allocations, a map and a
// goroutine per call, ~1.2 µs), and the list is intrusive: no
// allocation.
type pending struct {
	mu    sync.Mutex
	head  *admittedContext
	added uint32 // guarded by mu
}

// sweepEvery bounds how many admissions pass between sweeps, and so how
// long the calls that ended unclaimed keep their slots and memory.
const sweepEvery = 1024

func (l *pending) add(a *admittedContext) {
	l.mu.Lock()
	a.next, a.listed = l.head, true
	if l.head != nil {
		l.head.prev = a
	}
	l.head = a
	l.added++
	sweep := l.added%sweepEvery == 0
	l.mu.Unlock()
	if sweep {
		l.sweep()
	}
}

// remove takes a off the list and reports whether it was on it.
func (l *pending) remove(a *admittedContext) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !a.listed {
		return false
	}
	l.unlinkLocked(a)
	return true
}

func (l *pending) unlinkLocked(a *admittedContext) {
	if a.prev != nil {
		a.prev.next = a.next
	} else {
		l.head = a.next
	}
	if a.next != nil {
		a.next.prev = a.prev
	}
	a.prev, a.next, a.listed = nil, nil, false
}

// sweep gives back the slots of the listed calls whose streams ended and
// returns how many. Lock order: pending.mu, then the counters'.
func (l *pending) sweep() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for a := l.head; a != nil; {
		next := a.next
		if a.Context.Err() != nil { // the transport cancels it when the stream ends
			l.unlinkLocked(a)
			a.release()
			n++
		}
		a = next
	}
	return n
}

type admittedKey struct{}

// admittedContext is the context of a call the tap admitted: one
// allocation for the context, its slot and what the call proved. Only
// the tap makes one, so a client cannot forge it.
type admittedContext struct {
	context.Context
	g          *Guard
	caller, ip string // the slot (see admit)
	conn       *connProof
	proof      proof

	prev, next *admittedContext // on g.pending while listed; guarded by its mu
	listed     bool
}

func (a *admittedContext) release() { a.g.release(a.caller, a.ip) }

func (a *admittedContext) Value(key any) any {
	if key == (admittedKey{}) {
		return a
	}
	return a.Context.Value(key)
}
