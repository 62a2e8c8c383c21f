package server

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// A shared WatchTokenResponse is sent as the encoding made when it was
// shared, byte for byte what proto.Marshal makes; the encoding is dropped
// once nothing holds the shared value, and any other message is marshalled
// as grpc-go's proto codec does.
func TestWatchCodecSendsSharedEncodingUntilDropped(t *testing.T) {
	c := newSharedCodec()
	m := &tbv1.WatchTokenResponse{Token: &tbv1.Token{AccessToken: "x", Tenant: "acme", Version: 7}}
	want, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	h := c.share(m)
	if _, ok := c.wire.Load(m); !ok {
		t.Fatal("shared message has no stored encoding")
	}
	got, err := c.Marshal(h.msg)
	if err != nil || !bytes.Equal(got.Materialize(), want) {
		t.Fatalf("shared message encoded as %x, %v; want %x", got.Materialize(), err, want)
	}
	other := &tbv1.WatchTokenResponse{Token: &tbv1.Token{AccessToken: "y"}}
	if b, err := c.Marshal(other); err != nil || !bytes.Equal(b.Materialize(), must(proto.Marshal(other))) {
		t.Fatalf("unshared message: %x, %v", b.Materialize(), err)
	}
	runtime.KeepAlive(h)
	h = nil
	for deadline := time.Now().Add(10 * time.Second); ; {
		runtime.GC()
		if _, ok := c.wire.Load(m); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the encoding outlived its shared value")
		}
		time.Sleep(10 * time.Millisecond) // cleanups run on their own goroutine
	}
	if b, err := c.Marshal(m); err != nil || !bytes.Equal(b.Materialize(), want) {
		t.Fatalf("after the drop: %x, %v", b.Materialize(), err)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
