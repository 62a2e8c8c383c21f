package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/config"
)

// Run serves until ctx is done, then drains (see drain) and closes the
// daemon. It returns nil after a shutdown through ctx, the server's error if
// serving fails, and ErrClosed if the daemon was closed or run before.
func (d *Daemon) Run(ctx context.Context) error {
	d.mu.Lock()
	if d.closed || d.started {
		d.mu.Unlock()
		return ErrClosed
	}
	d.started = true
	d.mu.Unlock()

	stopBackground := d.background(ctx)
	defer stopBackground()
	if d.idp != nil && d.opts.Notice != nil {
		fmt.Fprint(d.opts.Notice, d.devBanner())
	}
	ended, running := d.serve()
	select {
	case err := <-ended: // a listener failed: stop the others at once
		_ = d.stop(ended, running-1, d.srv.GRPC.Stop)
		return err
	case <-ctx.Done():
		err := d.stop(ended, running, d.drain)
		d.log.Info("stopped")
		return err
	}
}

// background starts what runs while serving: TLS file reloads, audit
// retries and file watching. The returned func stops it and waits.
func (d *Daemon) background(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	if d.tls != nil {
		wg.Go(func() { d.tls.Watch(ctx, d.tlsEvery) })
	}
	wg.Go(func() { d.guard.WatchAudit(ctx, auditRetryInterval) })
	if d.opts.Load != nil && !d.watch.off {
		wg.Go(func() { d.watchFiles(ctx) })
	}
	return func() { cancel(); wg.Wait() }
}

// serve serves each listener in a goroutine that sends Serve's error to
// ended; running is how many there are.
func (d *Daemon) serve() (ended chan error, running int) {
	ended = make(chan error, 4)
	start := func(serve func() error) {
		running++
		go func() { ended <- serve() }()
	}
	serveGRPC := func(l net.Listener) func() error {
		return func() error {
			if err := d.srv.GRPC.Serve(l); err != nil {
				return fmt.Errorf("daemon: %w", err)
			}
			return nil
		}
	}
	if d.lis != nil {
		start(serveGRPC(d.lis))
	}
	if d.sock != nil {
		start(serveGRPC(d.sock))
	}
	if d.admin != nil {
		start(d.admin.serve)
	}
	if d.oauth != nil {
		start(func() error { return d.oauth.Serve(d.oauthLis) })
	}
	return ended, running
}

// stop ends the gRPC server with halt (drain, or Stop at once), then the
// token endpoint and the admin listener, waits for the running Serve
// calls, and closes the daemon.
func (d *Daemon) stop(ended <-chan error, running int, halt func()) error {
	halt()
	if d.oauth != nil {
		_ = d.oauth.Close()
	}
	if d.admin != nil {
		d.admin.shutdown()
	}
	for range running {
		if err := <-ended; err != nil {
			d.log.Warn("listener stopped", "error", err)
		}
	}
	return d.Close()
}

// drain is the shutdown sequence: gRPC health and /readyz turn NOT_SERVING
// at once, calls are still served for shutdown.drain (load balancers
// remove the replica), then watch streams end UNAVAILABLE and in-flight
// calls get shutdown.timeout, after which they end UNAVAILABLE too.
func (d *Daemon) drain() {
	d.mu.Lock()
	sd := d.shutdown
	d.mu.Unlock()
	if sd.Timeout <= 0 {
		sd.Timeout = config.DefaultShutdownTimeout
	}
	start := time.Now()
	if d.admin != nil {
		d.admin.ready.draining.Store(true)
	}
	if d.oauth != nil {
		d.oauth.Drain() // keep-alive off: clients reconnect, through the load balancer
	}
	d.srv.Health.Shutdown() // every service NOT_SERVING, for good
	d.log.Info("shutting down: health NOT_SERVING; serving calls while load balancers remove this replica", "drain", sd.Drain.String(), "timeout", sd.Timeout.String())
	time.Sleep(sd.Drain)
	d.log.Info("drain over: watch streams end UNAVAILABLE; waiting for in-flight calls", "elapsed", time.Since(start).Round(time.Millisecond).String())
	sctx, cancel := context.WithTimeout(context.Background(), sd.Timeout)
	defer cancel()
	var wg sync.WaitGroup
	if d.oauth != nil {
		wg.Go(func() {
			if err := d.oauth.Shutdown(sctx); err != nil {
				d.log.Warn("OAuth2 token endpoint stopped after the shutdown timeout", "error", err)
			}
		})
	}
	if err := d.srv.Shutdown(sctx); err != nil {
		d.log.Warn("gRPC server stopped after the shutdown timeout", "error", err)
	}
	wg.Wait()
	d.log.Info("gRPC server stopped", "elapsed", time.Since(start).Round(time.Millisecond).String())
}

// Close stops serving at once (no drain) and releases what New acquired,
// last first. It is idempotent and returns the first error of its first
// call each time.
func (d *Daemon) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return d.closeErr
	}
	d.closed = true
	for _, f := range slices.Backward(d.closers) {
		if err := f(); err != nil && !errors.Is(err, net.ErrClosed) && d.closeErr == nil {
			d.closeErr = fmt.Errorf("daemon: close: %w", err)
		}
	}
	return d.closeErr
}
