package authn

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
)

// Match hashes key and matches its digest.
func (s *KeySet) Match(key string) (int, bool) { return s.MatchDigest(HashKey(key)) }

func hexOf(key string) string { s := sha256.Sum256([]byte(key)); return hex.EncodeToString(s[:]) }

func TestParseKeyDigest(t *testing.T) {
	key := "tb_live_0123456789abcdef"
	d, err := ParseKeyDigest(strings.ToUpper(hexOf(key)))
	if err != nil {
		t.Fatal(err)
	}
	if d != HashKey(key) || d.String() != hexOf(key) {
		t.Errorf("digest %s does not match the key's SHA-256 %s", d, hexOf(key))
	}
	for _, bad := range []string{"", "abc", strings.Repeat("g", 64), hexOf(key) + "00"} {
		if _, err := ParseKeyDigest(bad); err == nil {
			t.Errorf("ParseKeyDigest(%q) accepted", bad)
		}
	}
}

func TestKeySetMatch(t *testing.T) {
	keys := []string{"key-one", "key-two", "key-three"}
	var ds []KeyDigest
	for _, k := range keys {
		ds = append(ds, HashKey(k))
	}
	s := NewKeySet(ds)
	for i, k := range keys {
		if got, ok := s.Match(k); !ok || got != i {
			t.Errorf("Match(%q) = %d, %v; want %d, true", k, got, ok, i)
		}
	}
	for _, k := range []string{"", "key-one ", "KEY-ONE", "key-four"} {
		if got, ok := s.Match(k); ok {
			t.Errorf("Match(%q) = %d, want no match", k, got)
		}
	}
	if _, ok := NewKeySet(nil).Match("anything"); ok {
		t.Error("empty set matched")
	}
}

func TestParseBearer(t *testing.T) {
	const key = "tb_secret_key_value"
	for _, tc := range []struct {
		name        string
		md          metadata.MD
		wantKey     string
		wantPresent bool
		wantErr     bool
	}{
		{"none", metadata.MD{}, "", false, false},
		{"bearer", metadata.Pairs("authorization", "Bearer "+key), key, true, false},
		{"lower-case scheme", metadata.Pairs("authorization", "bearer "+key), key, true, false},
		{"basic", metadata.Pairs("authorization", "Basic "+key), "", true, true},
		{"no scheme", metadata.Pairs("authorization", key), "", true, true},
		{"empty key", metadata.Pairs("authorization", "Bearer "), "", true, true},
		{"two headers", metadata.Pairs("authorization", "Bearer a", "authorization", "Bearer b"), "", true, true},
		{"tab separator", metadata.Pairs("authorization", "Bearer\t"+key), "", true, true},
		{"two spaces", metadata.Pairs("authorization", "Bearer  "+key), "", true, true},
		{"space inside the key", metadata.Pairs("authorization", "Bearer a b"), "", true, true},
		{"trailing tab", metadata.Pairs("authorization", "Bearer "+key+"\t"), "", true, true},
		{"scheme only", metadata.Pairs("authorization", "Bearer"), "", true, true},
		{"scheme prefix", metadata.Pairs("authorization", "Bearerx "+key), "", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, present, err := ParseBearer(tc.md.Get("authorization"))
			if got != tc.wantKey || present != tc.wantPresent || (err != nil) != tc.wantErr {
				t.Fatalf("ParseBearer = %q, %v, %v; want %q, %v, err=%v", got, present, err, tc.wantKey, tc.wantPresent, tc.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrBadAuthorization) || strings.Contains(err.Error(), key) {
					t.Errorf("error %q: want ErrBadAuthorization without the key", err)
				}
			}
		})
	}
}
