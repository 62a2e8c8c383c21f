package main

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
)

func TestVersionNamesBuild(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, func(string) string { return "" }, &out, &out); err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(out.String())
	for _, want := range []string{"tokenbroker ", " commit ", runtime.Version()} {
		if !strings.Contains(line, want) {
			t.Errorf("broker version = %q, want it to contain %q", line, want)
		}
	}
}
