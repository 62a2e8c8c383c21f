package server_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/limits"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
	"github.com/tokenbroker/tokenbroker/internal/devidp"
	"github.com/tokenbroker/tokenbroker/internal/server"
)

const goodKey = "good-api-key-for-the-half-open-test"

// startPolicyServer serves a real broker (dev IdP) with a guard whose
// policy serves the API key goodKey only; credential-less peers are not.
func startPolicyServer(t *testing.T) string {
	t.Helper()
	client := devidp.NewClient()
	idp, err := devidp.Start(t.Context(), devidp.Config{Clients: []devidp.Client{client}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	b, err := broker.New(broker.Config{Tenants: []broker.Tenant{{Name: "acme", TokenURL: idp.TokenURL(),
		ClientID: client.ID, ClientSecret: creds.Secret(client.Secret), AuthStyle: oauth2.AuthStyleInHeader}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	srv := server.New(guarded(t, server.Config{Broker: b, Logger: slog.New(slog.DiscardHandler)}, goodKey))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.GRPC.Serve(srv.Listener(lis)) }()
	t.Cleanup(func() { srv.GRPC.Stop(); <-served })
	return lis.Addr().String()
}

// halfOpen opens conns HTTP/2 connections from srcIP and sends perConn
// GetToken HEADERS of ~12 KiB metadata each, never a message, then
// counts the streams the server refused (answered or reset) until it has
// seen want refusals or the deadline passes. The connections stay open
// until the test ends.
func halfOpen(t *testing.T, addr, srcIP string, conns, perConn, want int, deadline time.Time) int {
	t.Helper()
	block := hugeHeaderBlock(addr, 11<<10) // 12 KiB: one frame, under the 16 KiB header list cap
	var mu sync.Mutex
	refused := 0
	reached := make(chan struct{})
	var wg sync.WaitGroup
	for range conns {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(srcIP)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial from %s: %v", srcIP, err)
		}
		t.Cleanup(func() { c.Close() })
		w := bufio.NewWriterSize(c, 64<<10)
		fr := http2.NewFramer(w, nil)
		_, _ = w.WriteString(http2.ClientPreface)
		_ = fr.WriteSettings()
		for i := range perConn {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: block, EndHeaders: true})
		}
		if err := w.Flush(); err != nil {
			t.Fatalf("send from %s: %v", srcIP, err)
		}
		stop := make(chan struct{})
		go func() { // end the read once the target is reached
			select {
			case <-reached:
				_ = c.SetReadDeadline(time.Now())
			case <-stop:
			}
		}()
		wg.Go(func() {
			defer close(stop)
			_ = c.SetReadDeadline(deadline)
			rd := http2.NewFramer(io.Discard, c)
			seen := map[uint32]bool{} // a refusal is HEADERS (trailers only) and RST_STREAM
			for {
				f, err := rd.ReadFrame()
				if err != nil {
					return
				}
				switch f := f.(type) {
				case *http2.SettingsFrame:
					if !f.IsAck() {
						_ = http2.NewFramer(c, nil).WriteSettingsAck()
					}
					continue
				case *http2.HeadersFrame, *http2.RSTStreamFrame:
				default:
					continue
				}
				if seen[f.Header().StreamID] {
					continue
				}
				seen[f.Header().StreamID] = true
				mu.Lock()
				if refused++; refused == want {
					close(reached)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return refused
}

// TestHalfOpenUnaryFloodRefusedPerIP (red team round 7, §2): HEADERS for
// GetToken with ~15 KiB metadata and never a message, 800 from each of
// three loopback source addresses. grpc-go runs no interceptor before the
// request message, so before the fix every stream was held (6,400 from
// one IP took the broker to 215 MB). Now at most the guard's
// MaxAnonymousStreamsPerIP are held per address, the rest are
// refused at once, RSS stays bounded, and a client with credentials on
// 127.0.0.1 still gets tokens during the attack.
func TestHalfOpenUnaryFloodRefusedPerIP(t *testing.T) {
	addr := startPolicyServer(t)
	runtime.GC()
	debug.FreeOSMemory()
	base := vmRSS(t)

	const conns, perConn = 8, 100
	deadline := time.Now().Add(20 * time.Second)
	want := conns*perConn - limits.Default().MaxAnonymousStreamsPerIP
	for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		if got := halfOpen(t, addr, ip, conns, perConn, want, deadline); got != want {
			t.Errorf("from %s: %d of %d half-open streams refused, want %d", ip, got, conns*perConn, want)
		}
	}
	peak := vmRSS(t)

	// A legitimate client still gets a token, during the attack.
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+goodKey), 10*time.Second)
	defer cancel()
	api := tbv1.NewTokenBrokerServiceClient(cc)
	for range 3 {
		if _, err := api.GetToken(ctx, &tbv1.GetTokenRequest{Tenant: "acme"}); err != nil {
			t.Fatalf("legitimate GetToken during the attack: %v", err)
		}
	}
	// A wrong API key is refused before any message is read.
	badCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer wrong")
	if _, err := api.GetToken(badCtx, &tbv1.GetTokenRequest{Tenant: "acme"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("GetToken with a wrong key: %v, want UNAUTHENTICATED", err)
	}
	const bound = 48 << 20
	t.Logf("RSS: before %d MB, with the streams held %d MB", base>>20, peak>>20)
	if grew := peak - base; grew > bound {
		t.Errorf("RSS grew by %d MB with the half-open streams held; bound %d MB", grew>>20, bound>>20)
	}
}
