// Package cli holds the client commands of the broker binary: `broker
// token`, which prints an access token from a broker or, like kognic-auth
// get-access-token, straight from the auth server, and `broker call`, a
// small curl that authenticates like kog. cmd/broker only dispatches to
// them.
package cli

import "errors"

// ErrUsage means the command printed its usage or a flag error already;
// the caller should exit non-zero without printing more.
var ErrUsage = errors.New("usage")
