package oauth

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/tokenbroker/tokenbroker/broker/names"
	"github.com/tokenbroker/tokenbroker/internal/audit"
	"github.com/tokenbroker/tokenbroker/internal/guard"
)

// Client authentication methods (RFC 6749 §2.3), as the request log names
// them.
const (
	authBasic = "client_secret_basic"
	authPost  = "client_secret_post"
	authNone  = "none" // a client certificate, if any, decides
)

// tokenRequest is a parsed client-credentials request.
type tokenRequest struct {
	tenant string   // client_id
	scopes []string // scope, split at spaces
	auth   string   // authBasic, authPost or authNone
	creds  guard.Credentials
	// rawKey is Basic's secret as sent, when it differs from its
	// form-decoded reading: curl -u and most HTTP libraries do not
	// form-encode it as RFC 6749 §2.3.1 asks.
	rawKey string
}

// The request's parameters; each may appear once (RFC 6749 §3.2).
var params = []string{"grant_type", "client_id", "client_secret", "scope"}

const clientIDRule = "client_id names the tenant: 1 to 63 lower-case letters, digits and hyphens, not starting with a hyphen"

// parse reads a token request: a POST of a form (at most maxBody bytes)
// with grant_type client_credentials, client_id naming the tenant, and the
// secret in Basic or the form (never both, nor in the URL). Errors are the
// answers to send; a bad Basic header is a credential the guard refuses.
func parse(w http.ResponseWriter, r *http.Request, maxBody int64) (tokenRequest, *Error) {
	var tr tokenRequest
	if r.Method != http.MethodPost {
		return tr, newError(http.StatusMethodNotAllowed, errInvalidRequest, "the token endpoint takes POST only (RFC 6749 §3.2)")
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return tr, badRequest("Content-Type must be application/x-www-form-urlencoded")
	}
	form, e := readForm(w, r, maxBody)
	if e != nil {
		return tr, e
	}
	q := r.URL.Query()
	for _, p := range params {
		if len(form[p]) > 1 {
			return tr, badRequest("parameter %s is repeated; send each parameter once", p)
		}
		if q.Has(p) {
			return tr, badRequest("parameter %s is in the URL; send parameters in the form-encoded body", p)
		}
	}
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		return tr, badRequest("grant_type is missing; this endpoint serves grant_type=client_credentials")
	default:
		return tr, newError(http.StatusBadRequest, errUnsupportedGrantType, "grant_type %q is not supported; this endpoint serves client_credentials only", audit.Clip(gt, audit.MaxDeniedFieldBytes))
	}
	if e := tr.authenticate(r, form); e != nil {
		return tr, e
	}
	if tr.creds.KeyErr != nil {
		return tr, nil // refused, audited and charged by the guard's authentication
	}
	if names.ValidTenant(tr.tenant) != nil {
		return tr, badRequest("%s", clientIDRule)
	}
	return tr, tr.scope(form.Get("scope"))
}

// scope splits scope at spaces (RFC 6749 §3.3) and normalizes the set as
// the broker does, so that what the guard checks and audits is bounded.
func (tr *tokenRequest) scope(scope string) *Error {
	var split []string
	for _, s := range strings.Split(scope, " ") {
		if s != "" {
			split = append(split, s)
		}
	}
	scopes, err := names.NormalizeScopes(split)
	switch {
	case errors.Is(err, names.ErrTooManyScopes):
		return newError(http.StatusBadRequest, errInvalidScope, "more than %d distinct scopes; ask for fewer", names.MaxScopes)
	case err != nil:
		return newError(http.StatusBadRequest, errInvalidScope, "%s", scopeRule)
	}
	tr.scopes = scopes
	return nil
}

const scopeRule = `each scope must be 1 to 256 printable ASCII characters other than space, '"' and '\'`

// readForm reads the form-encoded body, at most maxBody bytes.
func readForm(w http.ResponseWriter, r *http.Request, maxBody int64) (url.Values, *Error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return nil, newError(http.StatusRequestEntityTooLarge, errInvalidRequest, "the request body is larger than %d bytes", maxBody)
	}
	if err != nil {
		return nil, badRequest("the request body could not be read")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, badRequest("the request body is not form-encoded (application/x-www-form-urlencoded)")
	}
	return form, nil
}

// authenticate finds the client's credentials: HTTP Basic, client_secret
// in the form, or neither (a client certificate, or open mode); and
// client_id, the tenant, from either (equal if both give it).
func (tr *tokenRequest) authenticate(r *http.Request, form url.Values) *Error {
	tr.tenant, tr.auth = form.Get("client_id"), authNone
	secret, hasSecret := form.Get("client_secret"), form.Has("client_secret")
	switch authz := r.Header.Values("Authorization"); {
	case len(authz) > 1:
		return badRequest("the Authorization header is repeated")
	case len(authz) == 1 && hasSecret:
		return badRequest("the client authenticates twice (Authorization and client_secret); use one method (RFC 6749 §2.3)")
	case len(authz) == 1:
		tr.auth = authBasic
		id, key, raw, err := parseBasic(authz[0])
		if err != nil {
			tr.creds = guard.Credentials{KeySent: true, KeyErr: err}
			return nil
		}
		if tr.tenant != "" && tr.tenant != id {
			return badRequest("client_id in the form differs from the one in the Authorization header")
		}
		tr.tenant, secret, hasSecret = id, key, true
		if raw != key {
			tr.rawKey = raw
		}
	case hasSecret:
		tr.auth = authPost
	}
	if hasSecret {
		tr.creds = secretCredentials(secret, r.TLS)
	}
	if tr.tenant == "" {
		return badRequest("client_id is missing; it names the tenant whose token you want")
	}
	return nil
}

// secretCredentials are a client secret's credentials. x/oauth2 sends an
// empty secret for a client that has none: a verified certificate decides.
func secretCredentials(secret string, cs *tls.ConnectionState) guard.Credentials {
	switch {
	case secret != "":
		return guard.Credentials{KeySent: true, Key: secret}
	case cs != nil && len(cs.VerifiedChains) > 0:
		return guard.Credentials{}
	}
	return guard.Credentials{KeySent: true, KeyErr: errors.New("the client secret is empty; send an API key of this broker")}
}

// errBadBasic refuses an unusable Authorization header without quoting it.
var errBadBasic = errors.New(`the Authorization header must be "Basic " and the base64 of client_id:client_secret, each form-encoded (RFC 6749 §2.3.1)`)

// parseBasic decodes Basic credentials, whose parts are form-encoded;
// raw is the secret as sent.
func parseBasic(h string) (id, secret, raw string, err error) {
	scheme, b64, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "basic") {
		return "", "", "", errBadBasic
	}
	dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil {
		return "", "", "", errBadBasic
	}
	rawID, raw, ok := strings.Cut(string(dec), ":")
	if !ok {
		return "", "", "", errBadBasic
	}
	if id, err = url.QueryUnescape(rawID); err != nil {
		return "", "", "", errBadBasic
	}
	if secret, err = url.QueryUnescape(raw); err != nil {
		secret = raw // not form-encoded, e.g. a '%' of its own: read as sent
	}
	return id, secret, raw, nil
}
