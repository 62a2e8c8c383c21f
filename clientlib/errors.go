package clientlib

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// The errors a caller checks with errors.Is. Those of a token's kinds
// (ErrInvalidArgument to ErrUnavailable) are the same in broker and direct
// mode; each wraps the underlying error, whose message it keeps: a gRPC
// status (read it with status.Code) in broker mode, an *upstream.Error or
// a broker error in direct mode.
var (
	// ErrInvalidArgument: a tenant name, scope or minimum validity that
	// the package, the broker or the identity provider (invalid_scope)
	// refuses.
	ErrInvalidArgument = errors.New("clientlib: invalid argument")
	// ErrUnknownTenant: the broker has no such tenant, or removed it.
	ErrUnknownTenant = errors.New("clientlib: unknown tenant")
	// ErrPermissionDenied: the broker refused the caller, who is not
	// authenticated (UNAUTHENTICATED) or may not use the tenant or scopes
	// (PERMISSION_DENIED, which a broker with a caller policy also answers
	// for a tenant it does not have).
	ErrPermissionDenied = errors.New("clientlib: permission denied")
	// ErrCredentialsRejected: the identity provider rejects the tenant's
	// credentials (invalid_client, unauthorized_client); waiting will not
	// help. Like the broker's FAILED_PRECONDITION it also covers tokens
	// shorter-lived than the minimum validity asked for.
	ErrCredentialsRejected = errors.New("clientlib: credentials rejected by the identity provider")
	// ErrUnavailable: no valid token can be had now, as the identity
	// provider or the broker is down, unreachable or failing; retry with
	// backoff.
	ErrUnavailable = errors.New("clientlib: no token available")

	// ErrClosed is returned by a Source, and everything built on it, after
	// Close.
	ErrClosed = errors.New("clientlib: source closed")
	// ErrInsecureTransport is wrapped by the errors returned instead of
	// sending a token, or in direct mode a client secret, over plain http
	// (or an insecure gRPC connection) to a host other than loopback.
	ErrInsecureTransport = errors.New("clientlib: refusing to send credentials without TLS")
	// ErrUnknownHost is wrapped by the error of a request, in by-host mode,
	// whose host no environment names: it gets no token.
	ErrUnknownHost = errors.New("clientlib: no environment for host")
	// ErrNotConfigured is returned by NewHTTPClient when neither options
	// nor the environment say where tokens come from.
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

// statusKinds are the kinds of the broker's status codes, as
// tokenbroker.proto documents them.
var statusKinds = map[codes.Code]error{
	codes.InvalidArgument:    ErrInvalidArgument,
	codes.NotFound:           ErrUnknownTenant,
	codes.PermissionDenied:   ErrPermissionDenied,
	codes.Unauthenticated:    ErrPermissionDenied,
	codes.FailedPrecondition: ErrCredentialsRejected,
	codes.Unavailable:        ErrUnavailable,
	codes.Unimplemented:      errNotBroker,
}

// statusKind is the kind of an error of a call to the broker.
func statusKind(err error) error { return statusKinds[status.Code(err)] }

// brokerKind is the kind of an error of direct mode's in-process broker:
// the kind of the status the broker's gRPC server would answer with.
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

// lasting reports whether err is an answer of the auth server that waiting
// will not change (WithFailFast).
func lasting(err error) bool {
	ue, ok := errors.AsType[*upstream.Error](err)
	return ok && !ue.Transient()
}

// startFatal reports whether err, before the first token, makes NewSource
// fail at once rather than wait for its context.
func startFatal(err error) bool {
	return permanent(err) || errors.Is(err, ErrCredentialsRejected) || errors.Is(err, ErrPermissionDenied)
}
