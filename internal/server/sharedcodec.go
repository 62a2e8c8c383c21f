package server

import (
	"runtime"
	"sync"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec wrapped here
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// sharedCodec is the server's codec: grpc-go's proto codec, except that a
// WatchTokenResponse that WatchToken shares between streams, and a
// GetTokenResponse the response cache holds, are sent as the encoding
// made once when they were shared. A refresh pushed to 100,000
// streams is marshalled once instead of 100,000 times, like a
// grpc.PreparedMsg; unlike one, the streams still send the message itself,
// so that every interceptor (the guard's audit of each token handed out)
// sees it.
type sharedCodec struct {
	encoding.CodecV2
	// wire maps a shared *tbv1.WatchTokenResponse or cached
	// *tbv1.GetTokenResponse to its encoding ([]byte), until the message
	// is no longer shared (see share and responseCache.get).
	wire sync.Map
}

func newSharedCodec() *sharedCodec {
	return &sharedCodec{CodecV2: encoding.GetCodecV2("proto")}
}

func (c *sharedCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch v.(type) {
	case *tbv1.WatchTokenResponse, *tbv1.GetTokenResponse:
		if b, ok := c.wire.Load(v); ok {
			// Read-only and never freed into a pool: grpc-go copies
			// (or compresses) it into the frames it writes.
			return mem.BufferSlice{mem.SliceBuffer(b.([]byte))}, nil
		}
	}
	return c.CodecV2.Marshal(v)
}

// sharedResponse is one WatchTokenResponse shared by every stream that
// sends the same broker update (broker.Update.Shared holds it).
type sharedResponse struct{ msg *tbv1.WatchTokenResponse }

// share encodes m once for every stream that sends it. The encoding is
// dropped when the returned value is garbage, that is when no stream
// holds the update any more; a stream still sending m then marshals it
// the ordinary way.
func (c *sharedCodec) share(m *tbv1.WatchTokenResponse) *sharedResponse {
	h := &sharedResponse{msg: m}
	b, err := proto.Marshal(m)
	if err != nil {
		return h // sent unshared; the ordinary Marshal reports the error
	}
	c.wire.Store(m, b)
	runtime.AddCleanup(h, func(m *tbv1.WatchTokenResponse) { c.wire.Delete(m) }, m)
	return h
}
