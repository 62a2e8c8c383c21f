package daemon_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

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
	// 200 KB tokens: the first overdraws grpc-go's 64 KiB write quota of
	// the stream and only 64 KiB of it (the client's window) is written,
	// so the next send blocks.
	idp := faultidp.Start()
	t.Cleanup(idp.Close)
	for i := range 2 {
		idp.Push(faultidp.OK(fmt.Sprintf("%d%s", i, strings.Repeat("x", 200<<10)), 3600))
	}
	s := brokertest.StartSecured(t)
	base := fmt.Sprintf(brokertest.SecuredConfig, s.IdP.TokenURL(), s.Client.ID, brokertest.SHA256Hex(s.APIKey))
	big := "  - name: team-big\n    token_url: " + idp.TokenURL() + "\n    allow_insecure_http: true\n    client_id: c\n    client_secret_file: idp.secret\ncallers:\n"
	s.WriteConfig(strings.Replace(base, "callers:\n", big, 1))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(brokertest.Bearer(t.Context(), s.APIKey), time.Minute)
	defer cancel()

	// A client that never reads: a fixed 64 KiB window (no BDP growth).
	cc, err := grpc.NewClient(s.Addr, grpc.WithTransportCredentials(s.TLSOnly()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := tbv1.NewTokenBrokerServiceClient(cc).WatchToken(ctx, &tbv1.WatchTokenRequest{Tenant: "team-big"}); err != nil {
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
	eventually(t, "a send blocked on flow control", sendBlockedOnFlowControl)

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

// sendBlockedOnFlowControl reports whether a goroutine waits for
// grpc-go's per-stream write quota: a send that a client that does not
// read has blocked.
func sendBlockedOnFlowControl() bool {
	buf := make([]byte, 4<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "(*writeQuota).get")
}
