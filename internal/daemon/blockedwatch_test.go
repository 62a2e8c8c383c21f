package daemon_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/test/brokertest"
	"github.com/tokenbroker/tokenbroker/internal/test/faultidp"
)

// A watch whose client does not read blocks the broker's send once
// grpc-go's flow control is spent. When a policy change revokes the
// caller, that stream must still end at once (denial audited, the
// caller's stream slot freed), not when its connection closes: the
// client's own deadline here is far away.
func TestRevocationEndsAWatchWhoseClientDoesNotRead(t *testing.T) {
	s, base, _, _ := blockedWatch(t)
	s.WriteConfig(strings.Replace(base, `tenants: ["team-*"]`, `tenants: [acme]`, 1))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the revoked watch's denial in the audit trail", func() bool {
		for _, r := range s.AuditRecords() {
			if r.Event == audit.EventDeny && r.Tenant == "team-big" && strings.Contains(r.Reason, "revoked") {
				return true
			}
		}
		return false
	})
}

// Red team (issue 11, round 3): the broker's own end of a watch (its
// tenant removed or reconfigured) reached the stream only through the
// push, which a client that does not read held in its send, so the
// stream outlived its tenant until the connection closed. It now ends at
// once, and the client, when it reads, gets the status after what it had
// not read.
func TestTenantRemovalEndsAWatchWhoseClientDoesNotRead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config func(base, big string) string
		want   codes.Code
	}{
		{"removed", func(base, _ string) string { return base }, codes.NotFound},
		{"reconfigured", func(_, big string) string { return strings.Replace(big, "client_id: c\n", "client_id: c2\n", 1) }, codes.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, base, big, stream := blockedWatch(t)
			s.WriteConfig(tc.config(base, big))
			if err := s.Reload(); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the WatchToken handler to return", func() bool {
				return !strings.Contains(goroutines(), "internal/server.(*Server).WatchToken(")
			})
			for {
				if _, err := stream.Recv(); err != nil {
					brokertest.WantStatus(t, "the watch of a "+tc.name+" tenant", err, tc.want)
					break
				}
			}
		})
	}
}

// blockedWatch starts a secured broker with tenant team-big (200 KB
// tokens) and opens a watch on it, as caller ci, whose client does not
// read, until the broker's send to it blocks. It returns the broker, its
// config without and with team-big, and the stream.
func blockedWatch(t *testing.T) (s *brokertest.Secured, base, withBig string, stream tbv1.TokenBrokerService_WatchTokenClient) {
	t.Helper()
	// 200 KB tokens: the first overdraws grpc-go's 64 KiB write quota of
	// the stream and only 64 KiB of it (the client's window) is written,
	// so the next send blocks.
	idp := faultidp.Start()
	t.Cleanup(idp.Close)
	for i := range 2 {
		idp.Push(faultidp.OK(fmt.Sprintf("%d%s", i, strings.Repeat("x", 200<<10)), 3600))
	}
	s = brokertest.StartSecured(t)
	base = fmt.Sprintf(brokertest.SecuredConfig, s.IdP.TokenURL(), s.Client.ID, brokertest.SHA256Hex(s.APIKey))
	big := "  - name: team-big\n    token_url: " + idp.TokenURL() + "\n    allow_insecure_http: true\n    client_id: c\n    client_secret_file: idp.secret\ncallers:\n"
	withBig = strings.Replace(base, "callers:\n", big, 1)
	s.WriteConfig(withBig)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(brokertest.Bearer(t.Context(), s.APIKey), time.Minute)
	t.Cleanup(cancel)

	// A client that does not read: a fixed 64 KiB window (no BDP growth).
	cc, err := grpc.NewClient(s.Addr, grpc.WithTransportCredentials(s.TLSOnly()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	stream, err = tbv1.NewTokenBrokerServiceClient(cc).WatchToken(ctx, &tbv1.WatchTokenRequest{Tenant: "team-big"})
	if err != nil {
		t.Fatal(err)
	}
	ci := s.API(s.TLSOnly())
	tok, err := s.Get(ctx, ci, "team-big")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Invalidate(ctx, ci, "team-big", tok.GetAccessToken()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a send blocked on flow control", func() bool { return strings.Contains(goroutines(), "(*writeQuota).get") })
	return s, base, withBig, stream
}

// goroutines is the stack of every goroutine.
func goroutines() string {
	buf := make([]byte, 4<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
