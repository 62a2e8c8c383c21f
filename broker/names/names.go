package names

import (
	"errors"
	"fmt"
	"slices"
)

const (
	// MaxScopes is the largest number of distinct scopes NormalizeScopes accepts.
	MaxScopes = 32
	// MaxScopeLen is the longest scope, in bytes, ValidScope accepts.
	MaxScopeLen = 256
	// MaxTenantLen is the longest tenant name, in bytes, ValidTenant accepts.
	MaxTenantLen = 63
	// DefaultTenant is the tenant a broker configured from the environment
	// serves, and the one a client asks for when it names none.
	DefaultTenant = "default"
)

// Sentinel errors wrapped by every error this package returns.
var (
	ErrInvalidTenant = errors.New("invalid tenant name")
	ErrInvalidScope  = errors.New("invalid scope")
	ErrTooManyScopes = errors.New("too many scopes")
)

// kindError carries a complete message and unwraps to a sentinel, so the
// sentinel's text does not clutter the message.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &kindError{msg: fmt.Sprintf(format, args...), kind: kind}
}

// ValidTenant reports whether name is a valid tenant name: 1 to 63 bytes of
// lower-case ASCII letters, digits and hyphens, not starting with a hyphen
// (^[a-z0-9][a-z0-9-]{0,62}$). The returned error wraps ErrInvalidTenant.
func ValidTenant(name string) error {
	ok := len(name) >= 1 && len(name) <= MaxTenantLen && name[0] != '-'
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
	}
	if ok {
		return nil
	}
	return errorf(ErrInvalidTenant, "tenant name %q: must match [a-z0-9][a-z0-9-]{0,62} (lower-case letters, digits, hyphens)", name)
}

// ValidScope reports whether scope is a valid OAuth2 scope-token (RFC 6749
// section 3.3): non-empty, at most MaxScopeLen bytes, and made only of the
// characters %x21 / %x23-5B / %x5D-7E, that is printable ASCII except space,
// double quote and backslash. The returned error wraps ErrInvalidScope.
func ValidScope(scope string) error {
	switch {
	case scope == "":
		return errorf(ErrInvalidScope, `scope "": must not be empty`)
	case len(scope) > MaxScopeLen:
		return errorf(ErrInvalidScope, "scope %q...: is %d bytes long; at most %d are allowed", scope[:32], len(scope), MaxScopeLen)
	}
	for i, c := range scope {
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return errorf(ErrInvalidScope, `scope %q: invalid character %q at byte %d; allowed are printable ASCII characters except space, '"' and '\'`, scope, c, i)
		}
	}
	return nil
}

// NormalizeScopes validates each scope with ValidScope and returns them
// sorted without duplicates (nil for none): scopes itself, without
// allocating, when it already is (clone it before keeping it), else a new
// slice; scopes is never modified. More than MaxScopes distinct scopes is
// an error wrapping ErrTooManyScopes.
func NormalizeScopes(scopes []string) ([]string, error) {
	if len(scopes) == 0 {
		return nil, nil
	}
	for _, s := range scopes {
		if err := ValidScope(s); err != nil {
			return nil, err
		}
	}
	out := scopes
	if !isSortedUnique(scopes) {
		out = slices.Compact(slices.Sorted(slices.Values(scopes)))
	}
	if len(out) > MaxScopes {
		return nil, errorf(ErrTooManyScopes, "%d distinct scopes; at most %d are allowed", len(out), MaxScopes)
	}
	return out, nil
}

func isSortedUnique(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] >= s[i] {
			return false
		}
	}
	return true
}

// CountDistinct returns the number of distinct strings in scopes, which
// limits on scopes count.
func CountDistinct(scopes []string) int {
	if isSortedUnique(scopes) {
		return len(scopes)
	}
	return len(slices.Compact(slices.Sorted(slices.Values(scopes))))
}
