package guard

import (
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/policy"
	"github.com/tokenbroker/tokenbroker/internal/test/logtest"
)

// Store's guarantees for one stream, driven without gRPC: a revocation
// waits for the audit line in flight, never for the network.

// stubStream is a grpc.ServerStream whose SendMsg reports that it was
// called and returns once release is closed (a client that stopped
// reading holds a send this long).
type stubStream struct {
	grpc.ServerStream
	entered chan struct{}
	release chan struct{}
}

func (s *stubStream) SendMsg(any) error {
	s.entered <- struct{}{}
	<-s.release
	return nil
}

// openStream returns a guardedStream of billing for team-a over ss,
// authorized and tracked by g as RecvMsg does.
func openStream(t *testing.T, g *Guard, h *policy.Holder, ss grpc.ServerStream) *guardedStream {
	t.Helper()
	c := &Caller{Name: "billing", Identity: authn.Identity{Kind: authn.KindSPIFFE, Value: "spiffe://prod/ns/billing/sa/api"}, holder: h}
	c.identity = c.Identity.String()
	gs := &guardedStream{ServerStream: ss, g: g, c: c, method: watchMethod, t: target{tenant: "team-a", scopes: []string{"read:x"}}}
	ctx, cancel := context.WithCancelCause(t.Context())
	gs.ServerStream = &contextStream{ServerStream: ss, ctx: callerContext{Context: ctx, c: c}}
	gs.cancel = cancelFunc(cancel)
	if err := g.track(gs); err != nil {
		t.Fatal(err)
	}
	gs.authorized = true
	t.Cleanup(func() { g.untrack(gs); cancel(nil) })
	return gs
}

func watchMsg(v uint64) *tbv1.WatchTokenResponse {
	return &tbv1.WatchTokenResponse{Token: token("team-a", v, []string{"read:x"})}
}

// within fails the test if ch yields nothing in 10 s: a bound for a
// failure, not a wait for success.
func within[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no result in 10 s", what)
		panic("unreachable")
	}
}

// TestStoreDoesNotWaitForANetworkSend: a send its client holds up does
// not hold up a Store that revokes the stream; once Store returned the
// stream's context is cancelled and its next send is refused before it
// reaches the network.
func TestStoreDoesNotWaitForANetworkSend(t *testing.T) {
	allow, deny := policies(t)
	h, err := policy.NewHolder(allow)
	if err != nil {
		t.Fatal(err)
	}
	trail := &logtest.Buffer{}
	g, err := New(Config{Policy: h, Audit: audit.New(trail)})
	if err != nil {
		t.Fatal(err)
	}
	ss := &stubStream{entered: make(chan struct{}, 2), release: make(chan struct{})}
	gs := openStream(t, g, h, ss)
	sent := make(chan error, 1)
	go func() { sent <- gs.SendMsg(watchMsg(1)) }()
	<-ss.entered // on the wire, held up

	stored := make(chan error, 1)
	go func() { stored <- h.Store(deny) }()
	if err := within(t, "Store while a send is held up", stored); err != nil {
		t.Fatal(err)
	}
	if st := gs.revoked.Load(); st == nil || st.Code != codes.PermissionDenied {
		t.Errorf("revoked = %v after Store returned, want PERMISSION_DENIED", st)
	}
	wantCode(t, "the stream's context after Store", context.Cause(gs.Context()), codes.PermissionDenied)
	wantCode(t, "a send after Store", gs.SendMsg(watchMsg(2)), codes.PermissionDenied)
	if len(ss.entered) != 0 {
		t.Error("a send after Store reached the network")
	}
	close(ss.release)
	if err := within(t, "the held-up send", sent); err != nil {
		t.Errorf("the send admitted before the change: %v", err)
	}
	if n := strings.Count(trail.String(), `"event":"issue"`); n != 1 {
		t.Errorf("%d issue lines, want 1 (the token admitted before the change)", n)
	}
}

// gateWriter holds the next audit write until open is closed, then
// numbers its return in seq.
type gateWriter struct {
	w       logtest.Buffer
	entered chan struct{}
	open    chan struct{}
	seq     *atomic.Int64
	wrote   atomic.Int64
}

func (w *gateWriter) Write(p []byte) (int, error) {
	w.entered <- struct{}{}
	<-w.open
	n, err := w.w.Write(p)
	w.wrote.Store(w.seq.Add(1))
	return n, err
}

// TestStoreWaitsForTheAuditLineInFlight: a send that passed the revoked
// check before the Store and is writing its audit line (an fsync, say)
// has its line written before Store returns: after Store, the trail
// gets no issue line of a revoked stream. The send itself goes out: its
// token was authorized before the change.
func TestStoreWaitsForTheAuditLineInFlight(t *testing.T) {
	allow, deny := policies(t)
	h, err := policy.NewHolder(allow)
	if err != nil {
		t.Fatal(err)
	}
	var seq atomic.Int64
	gw := &gateWriter{entered: make(chan struct{}, 1), open: make(chan struct{}), seq: &seq}
	g, err := New(Config{Policy: h, Audit: audit.New(gw)})
	if err != nil {
		t.Fatal(err)
	}
	ss := &stubStream{entered: make(chan struct{}, 2), release: make(chan struct{})}
	close(ss.release)
	gs := openStream(t, g, h, ss)
	sent := make(chan error, 1)
	go func() { sent <- gs.SendMsg(watchMsg(1)) }()
	<-gw.entered // past the check, writing its line

	storedAt := make(chan int64, 1)
	go func() {
		if err := h.Store(deny); err != nil {
			t.Error(err)
		}
		storedAt <- seq.Add(1)
	}()
	for gs.revoked.Load() == nil { // Store has decided; now it waits, or (wrongly) returns
		runtime.Gosched()
	}
	close(gw.open)
	at := within(t, "Store", storedAt)
	if wrote := gw.wrote.Load(); wrote == 0 || wrote > at {
		t.Error("Store returned before the audit line of the send it revoked in flight was written")
	}
	if err := within(t, "the send admitted before the change", sent); err != nil {
		t.Errorf("the send admitted before the change: %v", err)
	}
	wantCode(t, "a send after Store", gs.SendMsg(watchMsg(2)), codes.PermissionDenied)
	if n := strings.Count(gw.w.String(), `"event":"issue"`); n != 1 {
		t.Errorf("%d issue lines, want 1", n)
	}
}
