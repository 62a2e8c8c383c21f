package server

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/queue"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/guard"
)

// WatchToken implements TokenBrokerService. The stream's goroutine only
// waits for its end; the senders push the updates, so that the deep send
// path never grows its stack (8 KiB for its life, not 16).
func (s *Server) WatchToken(req *tbv1.WatchTokenRequest, stream grpc.ServerStreamingServer[tbv1.WatchTokenResponse]) error {
	ctx := stream.Context()
	p := &pushedWatch{s: s, stream: stream, end: make(chan error, 2), conn: connOf(ctx)}
	if !s.watches.add(p) {
		return errDrained()
	}
	defer s.watches.remove(p)
	w, err := s.broker.WatchNotify(withOwner(ctx), req.GetTenant(), req.GetScopes(), p.notify)
	if err != nil {
		return toStatus(err)
	}
	p.start(w)
	wait := abandonSendAfter
	defer func() { p.close(wait) }()
	// The stream's goroutine waits on two channels (each costs 112
	// bytes while it waits): the drain and a revocation reach it
	// through end.
	gone := watchDone(ctx, p.cancelled)
	select {
	case err := <-p.end:
		if err == errWatchEnded {
			wait, err = p.awaitEnd(ctx, w, gone)
		}
		return err
	case <-gone:
		return watchEnd(ctx)
	}
}

// connOf names the connection of a call's ctx: the caller's peer address
// the guard worked out, else the peer's.
func connOf(ctx context.Context) string {
	if c, ok := guard.CallerFromContext(ctx); ok && c.Peer != "" {
		return c.Peer
	}
	if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
		return pr.Addr.String() // a string: any net.Addr's type may not be comparable
	}
	return ""
}

// watches are the open WatchToken streams, for Drain to end, in a list
// through the streams themselves.
type watches struct {
	mu      sync.Mutex
	head    *pushedWatch
	drained bool
}

// add lists p, unless the server drained already.
func (l *watches) add(p *pushedWatch) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.drained {
		return false
	}
	p.next = l.head
	if l.head != nil {
		l.head.prev = p
	}
	l.head = p
	return true
}

func (l *watches) remove(p *pushedWatch) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.prev != nil {
		p.prev.next = p.next
	} else if l.head == p {
		l.head = p.next
	}
	if p.next != nil {
		p.next.prev = p.prev
	}
	p.prev, p.next = nil, nil
}

// drain ends every stream listed and refuses the ones to come.
func (l *watches) drain() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.drained = true
	for p := l.head; p != nil; p = p.next {
		p.finish(errDrained())
	}
}

// pushedWatch is one WatchToken stream whose updates the senders send.
type pushedWatch struct {
	s          *Server
	prev, next *pushedWatch // in s.watches; guarded by its mu
	conn       string       // the connection's remote address: its pushes run together
	stream     grpc.ServerStreamingServer[tbv1.WatchTokenResponse]
	// end receives why the stream ends: from finish, once (a failed send,
	// or the watch's end after its last update), and errWatchEnded from
	// notify, once. Two slots, so that neither ever blocks.
	end        chan error
	busy       atomic.Bool   // a push is queued or running: at most one per stream
	again      atomic.Bool   // a notice came since the running push looked
	endNoticed atomic.Bool   // errWatchEnded was sent
	sends      atomic.Uint32 // odd while a send runs (see awaitEnd)
	w          atomic.Pointer[broker.Watch]
	closed     atomic.Bool // no send starts once set

	mu      sync.Mutex    // guards sending and sent
	sending bool          // a send runs (one at a time: busy)
	sent    chan struct{} // made by close to wait for that send; closed when it ends
}

// errWatchEnded tells the handler that the broker ended the watch (a
// tenant removed or reconfigured) while a push was queued or running.
var errWatchEnded = errors.New("server: watch ended")

// notify is the broker's notice of something new: it queues a push unless
// one is queued or running, which then looks again (latest wins). The
// watch's end reaches the handler here too: a push blocked by a client
// that does not read would never report it.
func (p *pushedWatch) notify() {
	p.again.Store(true)
	if p.busy.CompareAndSwap(false, true) {
		p.s.senders.Add(p.conn, p.push)
	}
	if w := p.w.Load(); w != nil && w.Ended() && p.endNoticed.CompareAndSwap(false, true) {
		p.end <- errWatchEnded
	}
}

// start hands the watch over; the broker's first notices may have come
// before there was one to read, so it notifies once more.
func (p *pushedWatch) start(w *broker.Watch) {
	p.w.Store(w)
	p.notify()
}

// push sends the watch's latest update until no notice is left.
func (p *pushedWatch) push() {
	for {
		p.again.Store(false)
		p.sendLatest()
		p.busy.Store(false)
		// A notice that came before busy was cleared found it set: take
		// it over, unless a push of its own already did.
		if !p.again.Load() || !p.busy.CompareAndSwap(false, true) {
			return
		}
	}
}

// sendLatest sends the watch's latest update, or ends the stream when the
// watch ended or a send failed.
func (p *pushedWatch) sendLatest() {
	p.mu.Lock()
	w := p.w.Load()
	if p.closed.Load() || w == nil {
		p.mu.Unlock()
		return
	}
	p.sending = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.sending = false
		if p.sent != nil {
			close(p.sent)
		}
		p.mu.Unlock()
	}()
	u, ok, ended := w.Next()
	switch {
	case ended:
		p.finish(toStatus(w.Err()))
	case ok:
		p.sends.Add(1)
		err := p.stream.SendMsg(watchReply(u))
		p.sends.Add(1)
		if err != nil {
			p.finish(err)
		}
	}
}

// cancelled ends the stream whose call was cancelled (a policy change
// revoked it: the guard ends it with its own status).
func (p *pushedWatch) cancelled() { p.finish(status.FromContextError(context.Canceled).Err()) }

// finish ends the stream with err, unless it is ending already.
func (p *pushedWatch) finish(err error) {
	if p.closed.CompareAndSwap(false, true) {
		p.end <- err // the one slot, filled once
	}
}

// awaitEnd waits, when the broker ended the watch, for the push queued or
// running to send what is left (up to maxEndWait), giving up a send that
// does not move in abandonSendAfter. It returns close's wait and the status.
func (p *pushedWatch) awaitEnd(ctx context.Context, w *broker.Watch, gone <-chan struct{}) (time.Duration, error) {
	t := time.NewTicker(abandonSendAfter)
	defer t.Stop()
	seen := p.sends.Load()
	for range maxEndWait / abandonSendAfter {
		select {
		case err := <-p.end:
			return abandonSendAfter, err
		case <-gone:
			return abandonSendAfter, watchEnd(ctx)
		case <-t.C:
		}
		now := p.sends.Load()
		if now == seen && now%2 == 1 {
			return 0, toStatus(w.Err()) // the same send, blocked
		}
		seen = now
	}
	return 0, toStatus(w.Err())
}

// maxEndWait bounds awaitEnd.
const maxEndWait = 5 * time.Second

// abandonSendAfter bounds how long a stream that is ending (a drain, a
// revocation, the client's cancel, the watch's end) waits for its send
// in progress.
const abandonSendAfter = 250 * time.Millisecond

// close stops the pushes and unsubscribes, before the handler returns.
// It waits for a send in progress at most wait: only the handler's return
// fails a send that a client not reading blocks for ever.
func (p *pushedWatch) close(wait time.Duration) {
	p.closed.Store(true)
	p.mu.Lock()
	var sent chan struct{}
	if p.sending && wait > 0 {
		p.sent = make(chan struct{})
		sent = p.sent
	}
	p.mu.Unlock()
	if sent != nil {
		t := time.NewTimer(wait)
		select {
		case <-sent:
		case <-t.C:
		}
		t.Stop()
	}
	_ = p.w.Load().Close()
}

// watchEnd is the status of a stream ended by its context. Not inlined,
// as errDrained: WatchToken's frame stays small for its life.
//
//go:noinline
func watchEnd(ctx context.Context) error { return status.FromContextError(ctx.Err()).Err() }

// errDrained is the status of a stream the drain ended.
//
//go:noinline
func errDrained() error {
	return status.Error(codes.Unavailable, "broker is shutting down; reconnect to another replica")
}

// newSenders returns the pool that runs WatchToken sends: a connection's
// sends in a row, so that HTTP/2 writes many per system call; a send
// blocked by a client that does not read gives its place up after
// stallAfter (README, Performance).
func newSenders() *queue.Queue[string, func()] {
	return queue.New[string](maxSenders, stallAfter, func(send func()) { send() })
}

const (
	maxSenders = 64
	stallAfter = 50 * time.Millisecond
)
