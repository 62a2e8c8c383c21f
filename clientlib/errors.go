package clientlib

import (
	"errors"

	"google.golang.org/grpc/codes"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// The errors a caller checks with errors.Is. ErrInvalidArgument to
// ErrUnavailable are the same in broker and direct mode, and wrap the
// underlying error (a gRPC status, an *upstream.Error, a broker error).
var (
	// ErrInvalidArgument: a tenant, scope or minimum validity refused
	// here, by the broker or by the identity provider (invalid_scope).
	ErrInvalidArgument = errors.New("clientlib: invalid argument")
	// ErrUnknownTenant: the broker has no such tenant, or removed it.
	ErrUnknownTenant = errors.New("clientlib: unknown tenant")
	// ErrPermissionDenied: the broker refused the caller (UNAUTHENTICATED,
	// PERMISSION_DENIED, which it also answers for an unknown tenant).
	ErrPermissionDenied = errors.New("clientlib: permission denied")
	// ErrCredentialsRejected: the identity provider rejects the tenant's
	// credentials, or its tokens are too short-lived (FAILED_PRECONDITION).
	ErrCredentialsRejected = errors.New("clientlib: credentials rejected by the identity provider")
	// ErrUnavailable: the identity provider or the broker is down and no
	// valid token can be had; retry with backoff.
	ErrUnavailable = errors.New("clientlib: no token available")

	// ErrClosed: the Source, or what is built on it, is closed.
	ErrClosed = errors.New("clientlib: source closed")
	// ErrInsecureTransport: a token or secret would go without TLS to a
	// host other than loopback.
	ErrInsecureTransport = errors.New("clientlib: refusing to send credentials without TLS")
	// ErrUnknownHost: in by-host mode, no environment names the host.
	ErrUnknownHost = errors.New("clientlib: no environment for host")
	// ErrNotConfigured: neither options nor environment say where tokens
	// come from.
	ErrNotConfigured = errors.New("clientlib: no token source configured: set " + EnvBrokerAddr +
		" (and optionally " + EnvBrokerTenant + ") to use a token broker, or " + creds.EnvCredentials +
		" to a Kognic credentials file, or " + creds.EnvClientID + " and " + creds.EnvClientSecret +
		"; or pass WithBroker, WithCredentialsFile, WithClientCredentials or WithEnvironment")
)

// errNotBroker: the server does not serve tokenbroker.v1 (UNIMPLEMENTED).
var errNotBroker = errors.New("clientlib: not a token broker")

// kinded is err marked with its kind: it matches both, with err's message.
type kinded struct{ kind, err error }

func (e *kinded) Error() string   { return e.err.Error() }
func (e *kinded) Unwrap() []error { return []error{e.kind, e.err} }

// withKind marks err with kind; a nil kind leaves err as it is.
func withKind(kind, err error) error {
	if kind == nil || err == nil {
		return err
	}
	return &kinded{kind: kind, err: err}
}

// statusKinds are the kinds of the broker's status codes.
var statusKinds = map[codes.Code]error{
	codes.InvalidArgument:    ErrInvalidArgument,
	codes.NotFound:           ErrUnknownTenant,
	codes.PermissionDenied:   ErrPermissionDenied,
	codes.Unauthenticated:    ErrPermissionDenied,
	codes.FailedPrecondition: ErrCredentialsRejected,
	codes.Unavailable:        ErrUnavailable,
	codes.Unimplemented:      errNotBroker,
}

// brokerKind is the kind of an error of direct mode's broker, as the
// status its gRPC server would answer.
func brokerKind(err error) error {
	var tooShort *broker.TooShortLivedError
	ue, isUpstream := errors.AsType[*upstream.Error](err)
	switch {
	case errors.Is(err, broker.ErrInvalidArgument), isUpstream && ue.Permanent && ue.Code == "invalid_scope":
		return ErrInvalidArgument
	case errors.Is(err, broker.ErrUnknownTenant), errors.Is(err, broker.ErrTenantRemoved):
		return ErrUnknownTenant
	case errors.As(err, &tooShort), isUpstream && ue.Permanent:
		return ErrCredentialsRejected
	case errors.Is(err, broker.ErrClosed):
		return ErrClosed
	case isUpstream, errors.Is(err, broker.ErrTenantChanged), errors.Is(err, broker.ErrEvicted):
		return ErrUnavailable
	}
	return nil
}

// permanent reports whether err ends a Source for good.
func permanent(err error) bool {
	return errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrUnknownTenant) ||
		errors.Is(err, ErrClosed) || errors.Is(err, errNotBroker)
}

// lasting reports whether err is an auth server's answer that waiting will
// not change (WithFailFast).
func lasting(err error) bool {
	ue, ok := errors.AsType[*upstream.Error](err)
	return ok && !ue.Transient()
}

// startFatal reports whether err makes NewSource fail at once.
func startFatal(err error) bool {
	return permanent(err) || errors.Is(err, ErrCredentialsRejected) || errors.Is(err, ErrPermissionDenied)
}
