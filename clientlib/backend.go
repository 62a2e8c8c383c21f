package clientlib

import (
	"context"
	"time"
)

// backend is how a Source talks to a broker: over gRPC (grpc.go), or to an
// in-process broker.Broker in direct mode (direct.go).
type backend interface {
	getToken(ctx context.Context, minValid time.Duration) (rawToken, error)
	invalidate(ctx context.Context, sha256 string) (rawToken, error)
	watch(ctx context.Context) (stream, error)
	kind(err error) error // ErrUnknownTenant…, or nil
}

// stream is an open watch. recv blocks until a message arrives, the stream
// ends, or the context given to watch ends.
type stream interface {
	recv() (update, error)
	close()
}

// rawToken is a token as a backend receives it.
type rawToken struct {
	access, typ    string
	issued, expiry time.Time
}

// update is one message of a watch stream.
type update struct {
	tok     *rawToken // nil when the broker has no valid token
	failing bool      // the broker has no valid token and fetching fails
	state   string
	lastErr string
}
