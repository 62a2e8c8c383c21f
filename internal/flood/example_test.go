package flood_test

import (
	"fmt"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/flood"
)

// A log line per status code, 5 a second after a burst of 2; a line let
// through says how many were dropped before it.
func Example() {
	lines := flood.New(flood.Config[string, struct{}]{Every: time.Second / 5, Burst: 2, MaxKeys: 32})
	for i := range 4 {
		ok, dropped := lines.Allow("PermissionDenied", struct{}{})
		fmt.Println(i, ok, dropped)
	}
	// Output:
	// 0 true 0
	// 1 true 0
	// 2 false 0
	// 3 false 0
}
