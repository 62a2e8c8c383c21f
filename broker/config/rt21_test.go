package config_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/config"
)

// TestRT21OverflowIDCallerWarned (red team, issue 21): the kernel names a
// socket peer whose uid (gid) the broker's user namespace does not map as
// the overflow id, 65534 (/proc/sys/kernel/overflowuid): a broker in a
// user namespace (a pod with hostUsers: false) sees every process outside
// it as uid 65534. A caller unix_uid: 65534 is then every such process —
// three host uids got that caller's tokens in the red team's run — yet it
// loads without a word, where uid 0 is warned about.
func TestRT21OverflowIDCallerWarned(t *testing.T) {
	for _, key := range []string{"unix_uid", "unix_gid"} {
		t.Run(key, func(t *testing.T) {
			var logs bytes.Buffer
			_, err := config.ParseWith([]byte("listen: unix:///run/tb.sock\n"+listenTenant+"callers:\n  - {name: nobody, "+key+": 65534, tenants: [acme]}\n"),
				"broker.yaml", "testdata", config.Options{Now: now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				return // refused: fine
			}
			if !strings.Contains(logs.String(), "65534") || !strings.Contains(logs.String(), "config=broker.yaml:6") {
				t.Errorf("%s: 65534 (the overflow id: every peer of an unmapped id) is not warned about with its line:\n%s", key, logs.String())
			}
		})
	}
}
