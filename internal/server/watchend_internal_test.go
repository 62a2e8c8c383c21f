package server

import (
	"context"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
)

// Red team (issue 11, round 4): a reader's last update, queued behind
// other streams' blocked sends on its connection for longer than the
// 250 ms a blocked send is given, was dropped when its tenant was removed
// right after a refresh. A queued push is now waited for; only a send
// that does not move is given up.
func TestWatchEndWaitsForAQueuedLastUpdate(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	client := devidp.NewClient()
	idp, err := devidp.Start(ctx, devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	b, err := broker.New(broker.Config{Tenants: []broker.Tenant{{
		Name: "acme", TokenURL: idp.TokenURL(), ClientID: client.ID,
		ClientSecret: creds.Secret(client.Secret), AuthStyle: oauth2.AuthStyleInHeader,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s := New(Config{Broker: b})
	defer s.GRPC.Stop()

	stream := &recordingWatchStream{ctx: ctx, sent: make(chan *tbv1.Token, 16)}
	done := make(chan error, 1)
	go func() { done <- s.WatchToken(&tbv1.WatchTokenRequest{Tenant: "acme"}, stream) }()
	first := <-stream.sent

	// Sends that block (clients that do not read) ahead of this stream's
	// on its connection: its next push waits ~10 stall periods (500 ms).
	release := make(chan struct{})
	var blocked sync.WaitGroup
	for range 10 * maxSenders {
		blocked.Add(1)
		s.senders.Add("", func() { defer blocked.Done(); <-release })
	}
	defer blocked.Wait()
	defer close(release)

	replaced, err := b.Invalidate(ctx, "acme", nil, broker.Fingerprint(first.GetAccessToken()))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SetTenants(nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatal("WatchToken did not end after its tenant was removed")
	}
	if status.Code(err) != codes.NotFound {
		t.Errorf("WatchToken ended with %v, want NOT_FOUND", err)
	}
	var last *tbv1.Token
	for len(stream.sent) > 0 {
		last = <-stream.sent
	}
	if last.GetVersion() != replaced.Version {
		t.Errorf("the last update sent before the end was version %d, want the replacement, version %d", last.GetVersion(), replaced.Version)
	}
}

// recordingWatchStream is a WatchToken stream whose client reads at once.
type recordingWatchStream struct {
	grpc.ServerStream // not called
	ctx               context.Context
	sent              chan *tbv1.Token
}

func (r *recordingWatchStream) Context() context.Context { return r.ctx }

func (r *recordingWatchStream) Send(m *tbv1.WatchTokenResponse) error { return r.SendMsg(m) }

func (r *recordingWatchStream) SendMsg(m any) error {
	if tok := m.(interface{ GetToken() *tbv1.Token }).GetToken(); tok != nil {
		r.sent <- tok
	}
	return nil
}
