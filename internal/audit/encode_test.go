package audit

import (
	"encoding/json"
	"testing"
	"time"
)

func jsonLine(r Record) string {
	r.Time = r.Time.UTC()
	b, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func handLine(r Record) string {
	return string(appendRecord(appendTime(nil, r.Time), &r))
}

// TestAppendRecordMatchesJSON: the hand-written encoder writes exactly
// what encoding/json writes, so that readers of the trail see no change.
func TestAppendRecordMatchesJSON(t *testing.T) {
	ts := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("CET", 3600))
	for _, r := range []Record{
		{},
		{Time: ts, Event: EventIssue, Result: ResultOK},
		{Time: ts, Event: EventIssue, Method: "/tokenbroker.v1.TokenBrokerService/GetToken", Caller: "billing",
			Identity: "spiffe_id=spiffe://prod/ns/billing/sa/api", Peer: "127.0.0.1:5000", Tenant: "acme",
			Scopes: []string{"read", "write:all"}, TokenFingerprint: "0123456789ab", RejectedFingerprint: "ba9876543210",
			Version: 1<<64 - 1, Result: ResultError, Code: "Unavailable", Reason: "idp down", Count: 7},
		{Event: EventDeny, Tenant: "a\"b\\c<d>e&f\x00\x01\x1f\b\f\n\r\t\x7f", Scopes: []string{}, Reason: "bad \xff\xfe utf8 \u2028\u2029 é 日本 🙂"},
		{Event: EventDeny, Scopes: []string{"", "\u2027\u202a"}, Count: -3},
	} {
		if got, want := handLine(r), jsonLine(r); got != want {
			t.Errorf("hand-written:\n%s\nencoding/json:\n%s", got, want)
		}
	}
}

func FuzzAppendRecord(f *testing.F) {
	f.Add("acme", "read", "reason <&> \u2028", uint64(3), 5, int64(0))
	f.Add("\xff", "\x00", "\"\\", uint64(0), 0, int64(1e18))
	f.Fuzz(func(t *testing.T, tenant, scope, reason string, version uint64, count int, nanos int64) {
		r := Record{Time: time.Unix(0, nanos), Event: EventIssue, Tenant: tenant, Scopes: []string{scope, tenant},
			Reason: reason, Version: version, Count: count, Result: ResultOK}
		if got, want := handLine(r), jsonLine(r); got != want {
			t.Errorf("hand-written:\n%s\nencoding/json:\n%s", got, want)
		}
	})
}
