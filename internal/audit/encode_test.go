package audit

import (
	"encoding/json"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// line is r's audit line as Log writes it, without the newline.
func line(t testing.TB, r Record) string {
	e := newEncoder()
	_ = e.add(&r)
	s := e.buf.String()
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
		t.Fatalf("not one line: %q", s)
	}
	return strings.TrimSuffix(s, "\n")
}

// object returns a JSON object's keys in order and its decoded values.
func object(t testing.TB, s string) ([]string, map[string]any) {
	dec := json.NewDecoder(strings.NewReader(s))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("%q: not an object: %v", s, err)
	}
	var keys []string
	vals := map[string]any{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		keys = append(keys, tok.(string))
		vals[tok.(string)] = v
	}
	if _, err := dec.Token(); err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("%q: trailing data", s)
	}
	return keys, vals
}

// sameAsJSON checks that r's line has the fields, in the order and with
// the values, that encoding/json gives Record (only the escaping of a
// string may differ: the trail does not escape <, > and &).
func sameAsJSON(t testing.TB, r Record) {
	t.Helper()
	if r.Time.IsZero() { // a written record always has its time
		r.Time = time.Unix(1, 0)
	}
	r.Time = r.Time.UTC()
	want, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	got := line(t, r)
	gk, gv := object(t, got)
	wk, wv := object(t, string(want))
	if !slices.Equal(gk, wk) || !reflect.DeepEqual(gv, wv) {
		t.Errorf("audit line:\n%s\nencoding/json:\n%s", got, want)
	}
}

// TestLineMatchesJSON: readers of the trail see the fields Record's json
// tags name, omitempty honoured, in the same order.
func TestLineMatchesJSON(t *testing.T) {
	ts := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("CET", 3600))
	for _, r := range []Record{
		{},
		{Time: ts, Event: EventIssue, Result: ResultOK},
		{Time: ts, Event: EventIssue, Method: "/tokenbroker.v1.TokenBrokerService/GetToken", Caller: "billing",
			Identity: "spiffe_id=spiffe://prod/ns/billing/sa/api", Peer: "127.0.0.1:5000", Tenant: "acme",
			Scopes: []string{"read", "write:all"}, TokenFingerprint: "0123456789ab", RejectedFingerprint: "ba9876543210",
			Version: 1<<64 - 1, Result: ResultError, Code: "Unavailable", Reason: "idp down", Count: 7},
		{Event: EventDeny, Tenant: "a\"b\\c<d>e&f\x00\x01\x1f\b\f\n\r\t\x7f", Scopes: []string{}, Reason: "bad \xff\xfe utf8 \u2028\u2029 é 日本 🙂"},
		{Event: EventDeny, Scopes: []string{"", "\u2027\u202a", "level", "msg"}, Count: -3, Reason: "msg"},
	} {
		sameAsJSON(t, r)
	}
}

func FuzzLine(f *testing.F) {
	f.Add("acme", "read", "reason <&> \u2028", uint64(3), 5, int64(0))
	f.Add("\xff", "\x00", "\"\\", uint64(0), 0, int64(1e18))
	f.Fuzz(func(t *testing.T, tenant, scope, reason string, version uint64, count int, nanos int64) {
		sameAsJSON(t, Record{Time: time.Unix(0, nanos), Event: EventIssue, Tenant: tenant, Scopes: []string{scope, tenant},
			Reason: reason, Version: version, Count: count, Result: ResultOK})
	})
}

// TestUnencodableLineFailsItsCall: a time JSON cannot hold fails the
// call (no token without its line) and writes nothing.
func TestUnencodableLineFailsItsCall(t *testing.T) {
	var buf strings.Builder
	l := New(&buf)
	err := l.Log(Record{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), Event: EventIssue, Result: ResultOK})
	if err == nil || buf.Len() != 0 {
		t.Fatalf("Log = %v, wrote %q; want an error and nothing written", err, buf.String())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}
