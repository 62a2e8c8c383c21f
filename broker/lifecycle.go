package broker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/tokenbroker/tokenbroker/broker/upstream"
)

// Defaults of Config.
const (
	defaultFetchTimeout = 10 * time.Second
	defaultIdleTimeout  = time.Hour
)

// New returns a Broker serving cfg.Tenants and starts fetching every
// tenant's default-scope token in the background. The caller must Close
// (or Shutdown) the Broker.
func New(cfg Config) (*Broker, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = defaultFetchTimeout
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = defaultIdleTimeout
	}
	b := &Broker{cfg: cfg, log: cfg.Logger, clock: cfg.Clock, tenants: map[string]*tenant{}, stopped: make(chan struct{})}
	b.pools = upstream.NewPools(upstream.PoolsConfig{HTTPClient: cfg.HTTPClient})
	b.base, b.cancel = context.WithCancel(context.Background())
	if err := b.SetTenants(cfg.Tenants); err != nil {
		_ = b.Close() // nothing has started that could fail to stop
		return nil, err
	}
	b.cfg.Tenants = nil // the tenants hold their copies
	return b, nil
}

func (b *Broker) isClosed() bool {
	b.life.RLock()
	defer b.life.RUnlock()
	return b.closed
}

// Close is Shutdown without a deadline: it returns nil once every
// background goroutine has ended (quickly, unless a custom Fetcher ignores
// its context). It is idempotent and safe to call concurrently with Shutdown.
func (b *Broker) Close() error {
	return b.Shutdown(context.Background())
}

// Shutdown stops the Broker: watches end and calls fail with ErrClosed,
// timers stop and requests in flight are cancelled. It waits for the
// background goroutines until ctx ends, then returns ctx's error (wrapped);
// a later Close or Shutdown waits again. It is idempotent.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.life.Lock()
	first := !b.closed
	b.closed = true
	b.life.Unlock()
	if first {
		b.mu.Lock()
		for _, t := range b.tenants {
			for e := range t.entries() {
				e.drop(ErrClosed)
			}
		}
		b.mu.Unlock()
		b.cancel()
		// No wg.Add can follow: every Add happens under life.RLock after
		// checking closed.
		go func() {
			b.wg.Wait()
			b.pools.CloseIdleConnections()
			close(b.stopped)
		}()
	}
	select {
	case <-b.stopped:
		return nil
	case <-ctx.Done():
		select {
		case <-b.stopped: // both ready: the work did end
			return nil
		default:
		}
		return fmt.Errorf("broker: shutdown: background work still running: %w", ctx.Err())
	}
}
