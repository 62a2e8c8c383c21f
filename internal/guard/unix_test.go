package guard

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/authn"
	"github.com/tokenbroker/tokenbroker/internal/policy"
)

func unixID(v uint32) *uint32 { return &v }

// unixCallers: billing by uid 1000, batch by gid 4243, ci by API key.
func unixCallers() []policy.Caller {
	return []policy.Caller{
		{Name: "billing", UnixUID: unixID(1000), Tenants: []string{"acme"}},
		{Name: "batch", UnixGID: unixID(4243), Tenants: []string{"team-*"}},
		{Name: "ci", APIKeySHA256: keyDigest(ciKey), Tenants: []string{"team-*"}},
	}
}

// TestUnixSocketPeer: on a real Unix socket the kernel names this
// process; a caller of its uid gets tokens, its audit line names it
// (identity unix_uid, peer uid:pid) and so does its request log line.
func TestUnixSocketPeer(t *testing.T) {
	me := uint32(os.Geteuid())
	e := start(t, options{plaintext: true, unix: true,
		callers: []policy.Caller{{Name: "self", UnixUID: &me, Tenants: []string{"acme"}}}})
	api := tbv1.NewTokenBrokerServiceClient(e.plainClient())
	if _, err := get(t.Context(), api, "acme"); err != nil {
		t.Fatalf("GetToken as uid %d: %v", me, err)
	}
	_, err := get(t.Context(), api, "team-a")
	wantCode(t, "a tenant self may not use", err, codes.PermissionDenied)
	recs := e.records()
	peer := fmt.Sprintf("uid=%d:pid=%d", me, os.Getpid())
	if len(recs) != 2 || recs[0].Event != audit.EventIssue || recs[0].Caller != "self" || recs[0].Identity != fmt.Sprintf("unix_uid=%d", me) || recs[0].Peer != peer {
		t.Errorf("audit: %+v; want an issue line of caller self, identity unix_uid=%d, peer %s", recs, me, peer)
	}
	if !strings.Contains(e.logs.String(), `"caller":"self"`) || !strings.Contains(e.logs.String(), `"peer.address":"`+peer+`"`) {
		t.Errorf("request log:\n%s", e.logs)
	}
}

// TestUnixSocketIdentities: which caller a peer on the socket is, by the
// uid and primary gid the kernel reports (here set on the accepted
// connection as authn.NewUnixListener would).
func TestUnixSocketIdentities(t *testing.T) {
	for _, tc := range []struct {
		name     string
		peer     *authn.UnixPeer
		key      string
		tenant   string
		code     codes.Code
		caller   string
		identity string
	}{
		{"uid caller", authn.NewUnixPeer(1000, 100, 7), "", "acme", codes.OK, "billing", "unix_uid=1000"},
		{"gid caller", authn.NewUnixPeer(1003, 4243, 7), "", "team-a", codes.OK, "batch", "unix_gid=4243"},
		{"uid before gid", authn.NewUnixPeer(1000, 4243, 7), "", "team-a", codes.PermissionDenied, "billing", "unix_uid=1000"},
		{"no caller", authn.NewUnixPeer(1001, 4244, 7), "", "acme", codes.PermissionDenied, "", "unix_uid=1001"},
		{"root is no one special", authn.NewUnixPeer(0, 0, 7), "", "acme", codes.PermissionDenied, "", "unix_uid=0"},
		{"an API key decides, as over TCP", authn.NewUnixPeer(1001, 4244, 7), ciKey, "team-b", codes.OK, "ci", "api_key"},
		{"a wrong API key is no fallback to the uid", authn.NewUnixPeer(1000, 100, 7), "wrong", "acme", codes.Unauthenticated, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, options{plaintext: true, unix: true, remote: tc.peer, callers: unixCallers()})
			ctx := t.Context()
			if tc.key != "" {
				ctx = withKey(ctx, tc.key)
			}
			_, err := get(ctx, tbv1.NewTokenBrokerServiceClient(e.plainClient()), tc.tenant)
			wantCode(t, tc.name, err, tc.code)
			recs := e.records()
			if len(recs) != 1 || recs[0].Caller != tc.caller || recs[0].Identity != tc.identity {
				t.Errorf("audit: %+v; want caller %q, identity %q", recs, tc.caller, tc.identity)
			}
			if tc.code == codes.PermissionDenied && tc.caller == "" && !strings.Contains(recs[0].Reason, fmt.Sprintf("uid %d (gid %d) on the broker's Unix socket is not a caller", tc.peer.UID, tc.peer.GID)) {
				t.Errorf("reason %q", recs[0].Reason)
			}
		})
	}
}

// TestUnixSocketOpenMode: without callers a peer on the socket is local,
// served as loopback is.
func TestUnixSocketOpenMode(t *testing.T) {
	e := start(t, options{plaintext: true, unix: true, remote: authn.NewUnixPeer(1001, 1001, 7)})
	if _, err := get(t.Context(), tbv1.NewTokenBrokerServiceClient(e.plainClient()), "acme"); err != nil {
		t.Errorf("open mode on the socket: %v", err)
	}
}

// TestUnixSocketWatchRevoked: a policy without the uid's caller ends its
// open watch PERMISSION_DENIED by the time Store returns.
func TestUnixSocketWatchRevoked(t *testing.T) {
	e := start(t, options{plaintext: true, unix: true, remote: authn.NewUnixPeer(1000, 100, 7), callers: unixCallers()})
	w, err := tbv1.NewTokenBrokerServiceClient(e.plainClient()).WatchToken(t.Context(), &tbv1.WatchTokenRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	without, err := policy.New(unixCallers()[1:])
	if err != nil {
		t.Fatal(err)
	}
	if err := e.holder.Store(without); err != nil {
		t.Fatal(err)
	}
	_, err = w.Recv()
	wantCode(t, "watch of uid 1000 without its caller", err, codes.PermissionDenied)
	var denied bool
	for _, r := range e.records() {
		denied = denied || r.Event == audit.EventDeny && r.Method == watchMethod && r.Identity == "unix_uid=1000"
	}
	if !denied {
		t.Errorf("no deny line names unix_uid=1000:\n%s", e.audit)
	}
}
