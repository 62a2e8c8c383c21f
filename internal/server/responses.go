package server

import (
	"hash/maphash"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/tokenbroker/tokenbroker/broker"
	tbv1 "github.com/tokenbroker/tokenbroker/gen/tokenbroker/v1"
)

// responseCache holds the GetToken response of recently served tokens,
// so that a cache hit builds no message: a *broker.Token never changes,
// and the broker returns the same one until it gets a new token. The
// cached messages are shared by concurrent calls and must never be
// modified; marshalling one message concurrently is safe (protobuf-go
// keeps its size cache with atomic operations; TestGetTokenConcurrentHits
// runs it under -race).
//
// It is direct-mapped: a slot per hash of the token pointer, replaced on
// a collision, so it holds at most responseSlots messages and a lookup
// costs a hash and an atomic load. Keys hotter than that rebuild a
// message now and then, as every call did before.
type responseCache struct {
	// codec, if set, keeps each cached message's encoding, so that a hit
	// is not marshalled again either.
	codec *sharedCodec
	seed  maphash.Seed
	slots [responseSlots]atomic.Pointer[cachedResponse]
}

const responseSlots = 256

// maxCachedToken is the largest access token whose response the cache
// keeps: an entry holds the token and its encoding, and 256 of an IdP's
// 200 KB tokens would pin 100 MB. Larger ones get a message per call.
const maxCachedToken = 8 << 10

type cachedResponse struct {
	tok  *broker.Token
	resp *tbv1.GetTokenResponse
}

func newResponseCache(codec *sharedCodec) *responseCache {
	return &responseCache{codec: codec, seed: maphash.MakeSeed()}
}

// get returns the GetToken response for tok.
func (c *responseCache) get(tok *broker.Token) *tbv1.GetTokenResponse {
	if len(tok.AccessToken) > maxCachedToken {
		return &tbv1.GetTokenResponse{Token: toProto(tok)}
	}
	slot := &c.slots[maphash.Comparable(c.seed, tok)%responseSlots]
	if e := slot.Load(); e != nil && e.tok == tok {
		return e.resp
	}
	e := &cachedResponse{tok: tok, resp: &tbv1.GetTokenResponse{Token: toProto(tok)}}
	if c.codec != nil {
		if b, err := proto.Marshal(e.resp); err == nil { // else the ordinary Marshal reports it
			c.codec.wire.Store(e.resp, b)
		}
	}
	// Every entry stored is either in its slot or swapped out here, so
	// the codec forgets each replaced message: no encoding outlives its
	// slot. A call still sending a replaced message marshals it anew.
	if old := slot.Swap(e); old != nil && c.codec != nil {
		c.codec.wire.Delete(old.resp)
	}
	return e.resp
}
