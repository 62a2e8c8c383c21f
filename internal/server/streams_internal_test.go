package server

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/tokenbroker/tokenbroker/broker"
)

// TestStreamsPerAPIKeyOverAllIPs (issue D5): streams of one verified API
// key are capped over all its peer addresses, so more addresses do not
// multiply the per-IP cap; other keys and each IP's own cap still apply.
func TestStreamsPerAPIKeyOverAllIPs(t *testing.T) {
	l := &streamLimiter{authMax: 4, anonMax: 1, keyMax: 10, n: map[string]int{}, byKey: map[[32]byte]int{},
		verify: func(ctx context.Context, _ metadata.MD, _ string) (context.Context, error) { return ctx, nil }}
	open := func(ip, key string) (context.CancelFunc, error) {
		ctx, cancel := context.WithCancel(peer.NewContext(t.Context(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 1}}))
		_, err := l.tap(ctx, &tap.Info{FullMethodName: "/tokenbroker.v1.TokenBrokerService/GetToken",
			Header: metadata.Pairs("authorization", "Bearer "+key)})
		if err != nil {
			cancel()
		}
		return cancel, err
	}
	var cancels []context.CancelFunc
	t.Cleanup(func() {
		for _, c := range cancels {
			c()
		}
	})
	// Key "a" from 5 IPs: the per-IP cap (4) would allow 20; the key cap 10.
	held := 0
	for i := range 5 {
		for range 4 {
			c, err := open(fmt.Sprintf("127.0.0.%d", i+1), "a")
			if err == nil {
				cancels = append(cancels, c)
				held++
			} else if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("refusal: %v, want RESOURCE_EXHAUSTED", err)
			}
		}
	}
	if held != 10 {
		t.Fatalf("key a holds %d streams over 5 IPs, want the key cap 10", held)
	}
	// Another key on a fresh IP is not affected.
	if c, err := open("127.0.0.9", "b"); err != nil {
		t.Fatalf("another key: %v", err)
	} else {
		cancels = append(cancels, c)
	}
	// A stream that ends gives its slot back (AfterFunc runs async).
	cancels[0]()
	// Bounded in time, not in spins: on a loaded machine the AfterFunc
	// goroutine may wait for a CPU longer than any fixed number of yields.
	deadlineOK := false
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		l.mu.Lock()
		total := 0
		for _, v := range l.byKey {
			total += v
		}
		l.mu.Unlock()
		if total == 10 { // 9 of a + 1 of b
			deadlineOK = true
			break
		}
		time.Sleep(time.Millisecond)
	}
	if !deadlineOK {
		t.Fatal("the ended stream was not counted out")
	}
	if c, err := open("127.0.0.1", "a"); err != nil {
		t.Fatalf("after one of key a's streams ended: %v", err)
	} else {
		cancels = append(cancels, c)
	}
}

// TestNewScopeSetsTooFastIsResourceExhausted (issue D4): the broker's
// refusal of a new scope set over the caller's rate reaches the client
// as RESOURCE_EXHAUSTED with the broker's advice.
func TestNewScopeSetsTooFastIsResourceExhausted(t *testing.T) {
	err := toStatus(fmt.Errorf("%w (caller \"x\")", broker.ErrNewScopeSetsTooFast))
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted ||
		!strings.Contains(st.Message(), "creating new scope sets too fast; reuse scope sets or retry in a second") {
		t.Errorf("got %s %q, want RESOURCE_EXHAUSTED with the advice", st.Code(), st.Message())
	}
}

// TestStreamsPerAPIKeyIgnoreSchemeSpelling (red team, issue 11): the
// per-key cap counts the key, not the header's spelling of it: the
// scheme is case-insensitive, so "bearer" and "BEARER" are the same key
// as "Bearer" and must not each get a fresh allowance.
func TestStreamsPerAPIKeyIgnoreSchemeSpelling(t *testing.T) {
	l := &streamLimiter{authMax: 100, anonMax: 1, keyMax: 3, n: map[string]int{}, byKey: map[[32]byte]int{},
		verify: func(ctx context.Context, _ metadata.MD, _ string) (context.Context, error) { return ctx, nil }}
	ctx, cancel := context.WithCancel(peer.NewContext(t.Context(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 1}}))
	defer cancel()
	open := func(scheme string) error {
		_, err := l.tap(ctx, &tap.Info{FullMethodName: "/tokenbroker.v1.TokenBrokerService/GetToken",
			Header: metadata.Pairs("authorization", scheme+" the-key")})
		return err
	}
	for range 3 {
		if err := open("Bearer"); err != nil {
			t.Fatal(err)
		}
	}
	for _, scheme := range []string{"Bearer", "bearer", "BEARER", "bEaReR"} {
		if err := open(scheme); status.Code(err) != codes.ResourceExhausted {
			t.Errorf("%q: %v, want RESOURCE_EXHAUSTED (the key already holds its 3 streams)", scheme, err)
		}
	}
}
