package audit_test

import (
	"os"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/audit"
)

func Example() {
	l := audit.New(os.Stdout)
	_ = l.Log(audit.Record{
		Time:   time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Event:  audit.EventIssue,
		Caller: "billing", Tenant: "acme", Scopes: []string{"read:inputs"},
		TokenFingerprint: audit.Fingerprint("the access token itself is never written"),
		Version:          3, Result: audit.ResultOK,
	})
	// Output:
	// {"time":"2026-03-01T12:00:00Z","event":"issue","caller":"billing","tenant":"acme","scopes":["read:inputs"],"token_fingerprint":"7dba57b61683","version":3,"result":"ok"}
}
