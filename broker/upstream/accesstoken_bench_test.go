package upstream

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

// BenchmarkAccessTokenCheck is what Fetch adds to every success: the
// b64token syntax and echo checks of a JWT-shaped token of each size.
//
//	go test -run '^$' -bench AccessTokenCheck -benchmem ./broker/upstream/
func BenchmarkAccessTokenCheck(b *testing.B) {
	cs := []Credential{{ClientID: "client-1", ClientSecret: creds.Secret(rand.Text())}}
	for _, size := range []int{1 << 10, 8 << 10, 200 << 10} {
		raw := make([]byte, size*3/4)
		_, _ = rand.Read(raw)
		half := len(raw) / 2
		tok := "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(raw[:half]) + "." + base64.RawURLEncoding.EncodeToString(raw[half:])
		b.Run(fmt.Sprintf("%dKB", size>>10), func(b *testing.B) {
			for b.Loop() {
				if !isB64Token(tok) || tokenEchoes(cs, tok) {
					b.Fatal("a genuine token refused")
				}
			}
		})
	}
}
