package authn

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidSPIFFEID is wrapped by ValidSPIFFEID's errors.
var ErrInvalidSPIFFEID = errors.New("invalid SPIFFE ID")

const spiffePrefix = "spiffe://"

// ValidSPIFFEID checks id against the SPIFFE ID format: "spiffe://", a
// trust domain of lower-case letters, digits, '.', '-' and '_', then an
// optional path of non-empty segments of letters, digits, '.', '-' and
// '_' that are not "." or "..". No port, user info, query or fragment.
func ValidSPIFFEID(id string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidSPIFFEID, id, why)
	}
	if len(id) > 2048 {
		return fmt.Errorf("%w: longer than 2048 bytes", ErrInvalidSPIFFEID)
	}
	rest, ok := strings.CutPrefix(id, spiffePrefix)
	if !ok {
		return bad(`must start with "spiffe://" (lower-case scheme)`)
	}
	td, path, _ := strings.Cut(rest, "/")
	if td == "" {
		return bad("trust domain is empty")
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return bad(fmt.Sprintf("trust domain has character %q; allowed are a-z, 0-9, '.', '-', '_'", c))
		}
	}
	if strings.Contains(rest, "/") {
		for _, seg := range strings.Split(path, "/") {
			switch seg {
			case "":
				return bad("path has an empty segment or a trailing slash")
			case ".", "..":
				return bad(`path segments "." and ".." are not allowed`)
			}
			for i := 0; i < len(seg); i++ {
				c := seg[i]
				if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
					return bad(fmt.Sprintf("path has character %q; allowed are letters, digits, '.', '-', '_'", c))
				}
			}
		}
	}
	return nil
}
