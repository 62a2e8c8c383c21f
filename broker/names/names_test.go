package names_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/names"
)

func TestValidTenant(t *testing.T) {
	const rule = `: must match [a-z0-9][a-z0-9-]{0,62} (lower-case letters, digits, hyphens)`
	tests := []struct {
		name    string
		wantErr string
	}{
		{name: "a"},
		{name: "acme"},
		{name: "0"},
		{name: "acme-prod-2"},
		{name: "acme-"},
		{name: strings.Repeat("a", 63)},
		{name: "", wantErr: `tenant name ""` + rule},
		{name: "Acme", wantErr: `tenant name "Acme"` + rule},
		{name: "-acme", wantErr: `tenant name "-acme"` + rule},
		{name: "acme_prod", wantErr: `tenant name "acme_prod"` + rule},
		{name: "acme.prod", wantErr: `tenant name "acme.prod"` + rule},
		{name: "acme\n", wantErr: `tenant name "acme\n"` + rule},
		{name: "åcme", wantErr: `tenant name "åcme"` + rule},
		{name: strings.Repeat("a", 64), wantErr: fmt.Sprintf("tenant name %q", strings.Repeat("a", 64)) + rule},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := names.ValidTenant(tt.name)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidTenant(%q) = %v, want nil", tt.name, err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("ValidTenant(%q) = %v, want %s", tt.name, err, tt.wantErr)
			}
			if !errors.Is(err, names.ErrInvalidTenant) {
				t.Errorf("errors.Is(%v, ErrInvalidTenant) = false", err)
			}
		})
	}
}

func TestValidScope(t *testing.T) {
	const allowed = `; allowed are printable ASCII characters except space, '"' and '\'`
	tests := []struct {
		scope   string
		wantErr string
	}{
		{scope: "read"},
		{scope: "write:inputs"},
		{scope: "https://api.example.com/x.y?z=1&w#f"},
		{scope: "!#[]~"},
		{scope: strings.Repeat("s", 256)},
		{scope: "", wantErr: `scope "": must not be empty`},
		{scope: "a b", wantErr: `scope "a b": invalid character ' ' at byte 1` + allowed},
		{scope: `a"b`, wantErr: `scope "a\"b": invalid character '"' at byte 1` + allowed},
		{scope: `a\b`, wantErr: `scope "a\\b": invalid character '\\' at byte 1` + allowed},
		{scope: "ab\x7f", wantErr: `scope "ab\x7f": invalid character '\x7f' at byte 2` + allowed},
		{scope: "\tx", wantErr: `scope "\tx": invalid character '\t' at byte 0` + allowed},
		{scope: "xé", wantErr: `scope "xé": invalid character 'é' at byte 1` + allowed},
		{
			scope:   strings.Repeat("s", 257),
			wantErr: fmt.Sprintf("scope %q...: is 257 bytes long; at most 256 are allowed", strings.Repeat("s", 32)),
		},
	}
	for _, tt := range tests {
		t.Run(tt.scope, func(t *testing.T) {
			err := names.ValidScope(tt.scope)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidScope(%q) = %v, want nil", tt.scope, err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("ValidScope(%q) = %v, want %s", tt.scope, err, tt.wantErr)
			}
			if !errors.Is(err, names.ErrInvalidScope) {
				t.Errorf("errors.Is(%v, ErrInvalidScope) = false", err)
			}
		})
	}
}

func TestNormalizeScopes(t *testing.T) {
	many := func(n int) []string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf("scope-%02d", i)
		}
		return s
	}
	tests := []struct {
		name    string
		in      []string
		want    []string
		wantErr string
		wantIs  error
	}{
		{name: "nil", in: nil, want: nil},
		{name: "empty", in: []string{}, want: nil},
		{name: "sorted and deduplicated", in: []string{"b", "a", "c", "a", "b"}, want: []string{"a", "b", "c"}},
		{name: "32 distinct", in: many(32), want: many(32)},
		{name: "duplicates do not count", in: append(many(32), many(32)...), want: many(32)},
		{name: "33 distinct", in: many(33), wantErr: "33 distinct scopes; at most 32 are allowed", wantIs: names.ErrTooManyScopes},
		{name: "invalid", in: []string{"ok", "not ok"}, wantErr: `scope "not ok": invalid character ' ' at byte 3; allowed are printable ASCII characters except space, '"' and '\'`, wantIs: names.ErrInvalidScope},
		{name: "empty scope", in: []string{"a", ""}, wantErr: `scope "": must not be empty`, wantIs: names.ErrInvalidScope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.in)
			got, err := names.NormalizeScopes(in)
			if !slices.Equal(in, tt.in) {
				t.Errorf("NormalizeScopes modified its input: %q, was %q", in, tt.in)
			}
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("NormalizeScopes(%q) error = %v, want %s", tt.in, err, tt.wantErr)
				}
				if !errors.Is(err, tt.wantIs) {
					t.Errorf("errors.Is(%v, %v) = false", err, tt.wantIs)
				}
				return
			}
			if err != nil {
				t.Fatalf("NormalizeScopes(%q) error = %v", tt.in, err)
			}
			if !slices.Equal(got, tt.want) || (got == nil) != (tt.want == nil) {
				t.Errorf("NormalizeScopes(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestCountDistinct(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want int
	}{
		{nil, 0},
		{[]string{"a", "b"}, 2},
		{slices.Repeat([]string{"read"}, 40), 1},
		{[]string{"b", "a", "b", "c", "a"}, 3},
	} {
		if got := names.CountDistinct(tc.in); got != tc.want {
			t.Errorf("CountDistinct(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}
