package server

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbroker/tokenbroker/broker"
)

// TestNewScopeSetsTooFastIsResourceExhausted (issue D4): the broker's
// refusal of a new scope set over the caller's rate reaches the client
// as RESOURCE_EXHAUSTED with the broker's advice.
func TestNewScopeSetsTooFastIsResourceExhausted(t *testing.T) {
	err := toStatus(fmt.Errorf("%w (caller \"x\")", broker.ErrNewScopeSetsTooFast))
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted ||
		!strings.Contains(st.Message(), "creating new scope sets too fast; reuse scope sets or retry in a second") {
		t.Errorf("got %s %q, want RESOURCE_EXHAUSTED with the advice", st.Code(), st.Message())
	}
}
