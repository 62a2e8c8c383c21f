package creds

import "time"

// Option configures LoadFile, ParseFile and FromEnv.
type Option interface{ apply(*options) }

type options struct {
	now func() time.Time
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithClock sets the clock of a credentials file's expiry check (default
// time.Now); one that returns the zero time skips the check.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(o *options) { o.now = now })
}
