package oauth

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/names"
	"github.com/tokenbroker/tokenbroker/broker/upstream"
	"github.com/tokenbroker/tokenbroker/internal/guard"
)

// RFC 6749 §5.2 error codes, and server_error (§4.1.2.1), which the
// token endpoint answers when the broker cannot serve a tenant at all.
const (
	errInvalidRequest       = "invalid_request"
	errInvalidClient        = "invalid_client"
	errUnauthorizedClient   = "unauthorized_client"
	errUnsupportedGrantType = "unsupported_grant_type"
	errInvalidScope         = "invalid_scope"
	errUnavailable          = "temporarily_unavailable"
	errServer               = "server_error"
)

// Error is an answer of RFC 6749 §5.2, in the broker's words, never an
// IdP's. It carries the gRPC status a GetToken would have ended with, for
// the audit line (guard.Token).
type Error struct {
	Status      int
	Code        string // RFC 6749 error
	Description string
	RetryAfter  time.Duration // Retry-After, whole seconds; zero: none

	grpc  codes.Code
	cause string // the audit line's reason; Description if empty
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

// GRPCStatus is the status the audit line records.
func (e *Error) GRPCStatus() *status.Status {
	return status.New(e.grpc, cmp.Or(e.cause, e.Description))
}

func newError(st int, code, format string, args ...any) *Error {
	return &Error{Status: st, Code: code, Description: fmt.Sprintf(format, args...), grpc: codes.InvalidArgument}
}

func badRequest(format string, args ...any) *Error {
	return newError(http.StatusBadRequest, errInvalidRequest, format, args...)
}

// Retry-After of an answer that the identity provider is down: its own,
// capped, else retryAfterIdP.
const (
	retryAfterIdP = 5 * time.Second
	maxRetryAfter = 5 * time.Minute
)

// answers maps the guard's refusals (by status code) and broker errors to
// OAuth2 answers, first match wins. No IdP text reaches a client; refusals
// keep the guard's message, the same whether a tenant exists or not.
var answers = []struct {
	match  func(err error) bool
	grpc   codes.Code
	status int
	code   string
	desc   func(err error) string
	retry  func(err error) time.Duration
}{
	// The guard's refusals.
	{refused(codes.Unauthenticated), codes.Unauthenticated, http.StatusUnauthorized, errInvalidClient, guardMsg, nil},
	{refused(codes.PermissionDenied), codes.PermissionDenied, http.StatusBadRequest, errUnauthorizedClient, guardMsg, nil},
	{refused(codes.InvalidArgument), codes.InvalidArgument, http.StatusBadRequest, errInvalidScope, guardMsg, nil}, // too many scopes
	{refused(codes.ResourceExhausted), codes.ResourceExhausted, http.StatusTooManyRequests, errUnavailable, guardMsg, seconds(1)},
	{refused(codes.Unavailable), codes.Unavailable, http.StatusServiceUnavailable, errUnavailable, guardMsg, seconds(5)}, // audit trail down
	// The broker's errors, as server.toStatus codes them.
	{is(names.ErrInvalidScope, names.ErrTooManyScopes), codes.InvalidArgument, http.StatusBadRequest, errInvalidScope,
		fixed(scopeRule), nil},
	{is(names.ErrInvalidTenant), codes.InvalidArgument, http.StatusBadRequest, errInvalidRequest, fixed(clientIDRule), nil},
	{is(broker.ErrInvalidArgument), codes.InvalidArgument, http.StatusBadRequest, errInvalidRequest, fixed("the request is not valid"), nil},
	{is(broker.ErrUnknownTenant, broker.ErrTenantRemoved), codes.NotFound, http.StatusBadRequest, errUnauthorizedClient,
		fixed("client_id names no tenant of this broker"), nil},
	{is(broker.ErrTooManyScopeSets, broker.ErrNewScopeSetsTooFast), codes.ResourceExhausted, http.StatusTooManyRequests, errUnavailable,
		error.Error, seconds(1)}, // the broker's sentinels: no IdP text
	{is(broker.ErrClosed), codes.Unavailable, http.StatusServiceUnavailable, errUnavailable,
		fixed("the broker is shutting down; retry, another replica will answer"), seconds(1)},
	{is(broker.ErrTenantChanged, broker.ErrEvicted, broker.ErrShortLivedToken), codes.Unavailable, http.StatusServiceUnavailable, errUnavailable,
		fixed("the tenant's token is being replaced; retry"), seconds(1)},
	{isType[*broker.TooShortLivedError], codes.FailedPrecondition, http.StatusInternalServerError, errServer,
		fixed("the tenant's identity provider issues tokens too short-lived to hand out; the broker's operator must look at the tenant"), nil},
	{upstreamPermanent("invalid_scope"), codes.InvalidArgument, http.StatusBadRequest, errInvalidScope,
		fixed("the tenant's identity provider refused the requested scopes"), nil},
	{upstreamPermanent(""), codes.FailedPrecondition, http.StatusInternalServerError, errServer,
		fixed("the tenant's identity provider rejects the broker's credentials for it; the broker's operator must fix them"), nil},
	// Anything else: the identity provider failed and no valid token is
	// cached (or the broker's work timed out).
	{func(error) bool { return true }, codes.Unavailable, http.StatusServiceUnavailable, errUnavailable,
		fixed("the identity provider is unavailable and no valid token is cached; retry later"), idpRetryAfter},
}

// answer maps err, a refusal of guard.Token or a broker error of a request
// made on ctx, to its OAuth2 answer. A client that went away gets a 503
// it will not read, audited as CANCELLED or DEADLINE_EXCEEDED.
func answer(ctx context.Context, err error) *Error {
	if e, ok := errors.AsType[*Error](err); ok {
		return e
	}
	if errors.Is(context.Cause(ctx), errShuttingDown) {
		return &Error{Status: http.StatusServiceUnavailable, Code: errUnavailable, RetryAfter: time.Second, grpc: codes.Unavailable,
			Description: "the broker is shutting down; retry, another replica will answer"}
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return &Error{Status: http.StatusServiceUnavailable, Code: errUnavailable, grpc: status.FromContextError(ctx.Err()).Code(),
			Description: "the request was cancelled"}
	}
	for _, a := range answers {
		if !a.match(err) {
			continue
		}
		e := &Error{Status: a.status, Code: a.code, Description: a.desc(err), grpc: a.grpc, cause: err.Error()}
		if a.retry != nil {
			e.RetryAfter = a.retry(err)
		}
		return e
	}
	panic("oauth: answers has no catch-all") // the last row matches everything
}

func refused(c codes.Code) func(error) bool {
	return func(err error) bool { ge, ok := errors.AsType[*guard.Error](err); return ok && ge.Code == c }
}

func is(targets ...error) func(error) bool {
	return func(err error) bool {
		for _, t := range targets {
			if errors.Is(err, t) {
				return true
			}
		}
		return false
	}
}

func isType[T error](err error) bool { _, ok := errors.AsType[T](err); return ok }

// upstreamPermanent matches a permanent IdP error with that code ("": any).
func upstreamPermanent(code string) func(error) bool {
	return func(err error) bool {
		ue, ok := errors.AsType[*upstream.Error](err)
		return ok && ue.Permanent && (code == "" || ue.Code == code)
	}
}

func guardMsg(err error) string { ge, _ := errors.AsType[*guard.Error](err); return ge.Msg }

func fixed(s string) func(error) string { return func(error) string { return s } }

func seconds(n int) func(error) time.Duration {
	return func(error) time.Duration { return time.Duration(n) * time.Second }
}

func idpRetryAfter(err error) time.Duration {
	if ue, ok := errors.AsType[*upstream.Error](err); ok && ue.RetryAfter > 0 {
		return min(ue.RetryAfter, maxRetryAfter)
	}
	return retryAfterIdP
}
