package broker

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Token is an access token issued for one key. A *Token is immutable once
// the broker publishes it, so it may be shared between goroutines.
//
// Token redacts its AccessToken in String, GoString, Format and LogValue;
// read the field itself to use the token.
type Token struct {
	AccessToken string
	TokenType   string
	Expiry      time.Time
	IssuedAt    time.Time
	Scopes      []string
	Tenant      string
	// Version increases with every new token of the key, for the life of
	// the Broker, across reconfigurations and evictions.
	Version uint64

	sha256 string
	shared sharedValue // see Shared
}

// Shared returns what build returns, calling build once per token (the
// gRPC server's encoded response). Treat the result as immutable: other
// goroutines read it concurrently.
func (t *Token) Shared(build func() any) any {
	t.shared.once.Do(func() { t.shared.v = build() })
	return t.shared.v
}

// SHA256 returns the lower-case hex SHA-256 of the access token: the
// fingerprint callers use to name a token without sending it.
func (t *Token) SHA256() string {
	if t.sha256 == "" {
		return Fingerprint(t.AccessToken)
	}
	return t.sha256
}

// Fingerprint returns the lower-case hex SHA-256 of an access token.
func Fingerprint(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return hex.EncodeToString(sum[:])
}

// lifetime is how long the token was valid when the broker received it.
func (t *Token) lifetime() time.Duration { return t.Expiry.Sub(t.IssuedAt) }

// validFor reports whether the token is still valid d after now.
func (t *Token) validFor(now time.Time, d time.Duration) bool {
	return t != nil && t.Expiry.Sub(now) >= d
}

func (t *Token) String() string {
	if t == nil {
		return "<nil>"
	}
	return fmt.Sprintf("broker.Token{Tenant:%q Scopes:%q Version:%d Expiry:%s AccessToken:[REDACTED] SHA256:%.12s}",
		t.Tenant, t.Scopes, t.Version, t.Expiry.UTC().Format(time.RFC3339), t.SHA256())
}

// GoString redacts the access token.
func (t *Token) GoString() string { return t.String() }

// Format redacts the access token in every verb, %+v and %#v included.
func (t *Token) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(t.String())) }

// LogValue redacts the access token; it logs the fingerprint prefix.
func (t *Token) LogValue() slog.Value {
	if t == nil {
		return slog.StringValue("<nil>")
	}
	return slog.GroupValue(
		slog.String("tenant", t.Tenant),
		slog.Any("scopes", t.Scopes),
		slog.Uint64("version", t.Version),
		slog.Time("expiry", t.Expiry),
		slog.String("fingerprint", t.SHA256()[:12]),
	)
}

// State is the health of a key's token.
type State int

const (
	// StatePending: no token has been fetched yet.
	StatePending State = iota + 1
	// StateReady: a valid token is cached and the last refresh succeeded.
	StateReady
	// StateStale: a valid token is cached but refreshing it fails.
	StateStale
	// StateFailing: no valid token is cached and fetching one fails.
	StateFailing
)

func (s State) String() string {
	switch s {
	case StatePending:
		return "pending"
	case StateReady:
		return "ready"
	case StateStale:
		return "stale"
	case StateFailing:
		return "failing"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Status describes a key's token state.
type Status struct {
	State State
	// LastError is the last refresh error; nil after a success. Its message
	// is free of secrets.
	LastError error
	// NextRefresh is when the broker plans its next request for the key.
	NextRefresh time.Time
}

// Update is one state of a watched key.
type Update struct {
	// Token is the current valid token, nil when none is cached.
	Token  *Token
	Status Status
	shared *sharedValue // one per state delivered, shared by its watchers
}

type sharedValue struct {
	once sync.Once
	v    any
}

// Shared returns what build returns, calling build once for all the
// watchers the broker delivered this state to (the gRPC server encodes it
// once for all its streams). Treat the result as immutable. For an Update
// that did not come from a Watch, build runs every time.
func (u Update) Shared(build func() any) any {
	if u.shared == nil {
		return build()
	}
	u.shared.once.Do(func() { u.shared.v = build() })
	return u.shared.v
}
