package statuspage

import "github.com/jonboulle/clockwork"

// WithClock sets the clock for "generated at" and relative times.
func WithClock(clk clockwork.Clock) Option { return optionFunc(func(c *config) { c.clock = clk }) }
