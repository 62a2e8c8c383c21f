package clientlib

import "testing"

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost":             true,
		"LocalHost":             true,
		"127.0.0.1":             true,
		"127.9.8.7":             true,
		"::1":                   true,
		"0:0:0:0:0:0:0:1":       true,
		"::ffff:127.0.0.1":      true,
		"localhost.":            false, // a different name: the root zone's, not the host's
		"api.localhost":         false,
		"localhost.example.com": false,
		"[::1]":                 false, // callers strip brackets
		"127.0.0.1:80":          false, // and ports
		"10.0.0.1":              false,
		"::":                    false,
		"0.0.0.0":               false,
		"example.com":           false,
		"":                      false,
	} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}
