package server

import (
	"sync/atomic"
	"time"
)

// senders runs WatchToken sends off the streams' own goroutines, so that
// an idle stream's goroutine never grows its stack with the deep send
// path (the guard's audit, the codec, the transport) and keeps an 8 KiB
// stack instead of 16 KiB for its whole life.
//
// A send is handed to an idle worker whose stack has already grown; a
// fresh goroutine per send would grow its stack from 2 KiB on every
// update (runtime.copystack: a refresh pushed to 100,000 streams cost
// ~56 µs of broker CPU per stream that way, against ~18 µs on the
// streams' own goroutines). When no worker is idle a new one starts, up
// to maxSenders; past that a send gets a goroutine of its own. So a send
// blocked on a client that does not read (flow control) holds one
// goroutine and never holds up the others. Workers exit after
// senderIdle without work, so an idle broker keeps none.
type senders struct {
	work chan func()
	n    atomic.Int32 // running workers
}

const (
	maxSenders = 64
	senderIdle = 100 * time.Millisecond
)

func newSenders() *senders { return &senders{work: make(chan func())} }

// do runs f on a worker or a goroutine of its own; it does not wait.
func (p *senders) do(f func()) {
	select {
	case p.work <- f: // an idle worker took it
		return
	default:
	}
	if p.n.Add(1) <= maxSenders {
		go p.worker(f)
		return
	}
	p.n.Add(-1)
	go f()
}

func (p *senders) worker(f func()) {
	defer p.n.Add(-1)
	idle := time.NewTimer(senderIdle)
	defer idle.Stop()
	for {
		f()
		idle.Reset(senderIdle) // Go 1.23 timers: no stale tick survives a Reset
		select {
		case f = <-p.work:
		case <-idle.C:
			return
		}
	}
}
