package limits_test

import (
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenbroker/tokenbroker/broker/limits"
	"github.com/tokenbroker/tokenbroker/broker/names"
)

// TestDefaultsAreTheREADMEs: the README's limits block lists every key
// with its default; the two cannot drift apart.
func TestDefaultsAreTheREADMEs(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)\nlimits: +# these are the defaults\n(.*?)```").FindSubmatch(readme)
	if block == nil {
		t.Fatal("README has no limits block marked '# these are the defaults'")
	}
	var documented limits.Limits
	dec := yaml.NewDecoder(strings.NewReader(string(block[1])))
	dec.KnownFields(true)
	if err := dec.Decode(&documented); err != nil {
		t.Fatalf("README's limits block: %v", err)
	}
	if def := limits.Default(); documented != def {
		t.Errorf("README's limits block\n %+v\nDefault()\n %+v", documented, def)
	}
	var keys []string
	for _, line := range strings.Split(string(block[1]), "\n") {
		if k, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && !strings.HasPrefix(k, "#") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var want []string
	for _, k := range limits.Keys() {
		if _, deprecated := limits.Deprecated(k); !deprecated {
			want = append(want, k)
		}
	}
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Errorf("README documents %v, Limits has %v", keys, want)
	}
}

func TestDefaults(t *testing.T) {
	d := limits.Default()
	if d.MaxScopesPerRequest != names.MaxScopes {
		t.Errorf("MaxScopesPerRequest default %d, the API's bound is %d", d.MaxScopesPerRequest, names.MaxScopes)
	}
	if d.MaxStreamsPerCaller != 1000 || d.MaxAnonymousStreamsPerIP != 16 || d.HandshakeTimeout != 5*time.Second || d.RequestsPerSecond != 2000 {
		t.Errorf("Default() = %+v", d)
	}
	if err := d.Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
	got := limits.Limits{Burst: 7, RequestsPerSecond: -1}.WithDefaults()
	if got.Burst != 7 || got.RequestsPerSecond != -1 || got.MaxConnections != d.MaxConnections {
		t.Errorf("WithDefaults keeps set fields and negatives, fills zeros: %+v", got)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		l    limits.Limits
		keys []string
		want string
	}{
		{limits.Limits{Burst: -1}, nil, "limits.burst: must be from 1 to 1000000, got -1"},
		{limits.Limits{}, []string{"max_streams_per_caller"}, "limits.max_streams_per_caller: must be from 1 to 1000000, got 0"},
		{limits.Limits{RequestsPerSecond: 2e6}, nil, "limits.requests_per_second: must be a number greater than 0 and at most 1e+06, got 2e+06"},
		{limits.Limits{}, []string{"denials_per_second_per_ip"}, "limits.denials_per_second_per_ip: must be a number greater than 0 and at most 1e+06, got 0"},
		{limits.Limits{MaxMessageBytes: 1024}, nil, "limits.max_message_bytes: must be from 16384 to 4194304, got 1024"},
		{limits.Limits{HandshakeTimeout: time.Millisecond}, nil, "limits.handshake_timeout: must be from 100ms to 1h0m0s, got 1ms"},
		{limits.Limits{MaxScopesPerRequest: 33}, nil, "limits.max_scopes_per_request: must be from 1 to 32, got 33"},
	} {
		err := tc.l.Validate(tc.keys...)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Validate(%v) = %v, want %s", tc.keys, err, tc.want)
		}
		if fe, ok := errors.AsType[*limits.FieldError](err); !ok || !strings.HasPrefix(tc.want, "limits."+fe.Key+":") {
			t.Errorf("Validate(%v) = %#v, want a *FieldError naming the key", tc.keys, err)
		}
	}
	if err := (limits.Limits{}).Validate(); err != nil {
		t.Errorf("zero Limits: %v", err)
	}
}

func TestPtr(t *testing.T) {
	var l limits.Limits
	*l.Ptr("burst").(*int) = 3
	*l.Ptr("requests_per_second").(*float64) = 1.5
	*l.Ptr("max_connection_idle").(*time.Duration) = time.Second
	if l.Burst != 3 || l.RequestsPerSecond != 1.5 || l.MaxConnectionIdle != time.Second {
		t.Errorf("Ptr wrote %+v", l)
	}
	if l.Ptr("nope") != nil {
		t.Error("Ptr of an unknown key is not nil")
	}
	for _, k := range limits.Keys() {
		if l.Ptr(k) == nil {
			t.Errorf("Ptr(%q) = nil", k)
		}
	}
}

// TestDeprecated: the stream caps that the per-caller and per-anonymous-IP
// caps replaced still parse (Keys, Ptr, Validate) and name their
// replacement; current keys are not deprecated.
func TestDeprecated(t *testing.T) {
	for key, want := range map[string]string{
		"max_streams_per_ip": "max_streams_per_caller", "max_streams_per_api_key": "max_streams_per_caller",
		"max_open_streams_per_ip": "max_anonymous_streams_per_ip",
	} {
		if got, ok := limits.Deprecated(key); !ok || got != want {
			t.Errorf("Deprecated(%q) = %q, %v; want %q", key, got, ok, want)
		}
		var l limits.Limits
		*l.Ptr(key).(*int) = 64
		if err := l.Validate(key); err != nil || !slices.Contains(limits.Keys(), key) {
			t.Errorf("%s: 64 does not validate (%v), or the key is not accepted", key, err)
		}
	}
	if _, ok := limits.Deprecated("max_streams_per_caller"); ok {
		t.Error("max_streams_per_caller is deprecated")
	}
}
