package authn

import (
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrInvalidSPIFFEID is wrapped by ValidSPIFFEID's errors.
var ErrInvalidSPIFFEID = errors.New("invalid SPIFFE ID")

// ValidSPIFFEID checks id against the SPIFFE ID specification with
// go-spiffe's parser; "SPIFFE://…" and other non-canonical forms (port,
// user info, query, fragment, percent-encoding) are invalid.
func ValidSPIFFEID(id string) error {
	if len(id) > maxSPIFFEIDBytes {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidSPIFFEID, maxSPIFFEIDBytes)
	}
	if _, err := spiffeid.FromString(id); err != nil {
		return fmt.Errorf("%w %q: %v", ErrInvalidSPIFFEID, id, err)
	}
	return nil
}

// maxSPIFFEIDBytes is the specification's limit on a SPIFFE ID's length.
const maxSPIFFEIDBytes = 2048
