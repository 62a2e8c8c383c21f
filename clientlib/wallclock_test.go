package clientlib

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestWallMicrosIsTheWallClock: the cached path's clock reads what
// time.Now reads, to the microsecond, bracketed by two time.Now calls.
func TestWallMicrosIsTheWallClock(t *testing.T) {
	const tolerance = 1000 // µs, for a preemption between the reads
	for range 100 {
		before := time.Now().UnixMicro()
		w := wallMicros()
		after := time.Now().UnixMicro()
		if w < before-tolerance || w > after+tolerance {
			t.Fatalf("wallMicros() = %d, outside time.Now's [%d, %d] by more than %dµs", w, before, after, tolerance)
		}
	}
}

// fakeBackend serves tokens numbered by getToken calls; its watch stream
// delivers the first token and then stays quiet.
type fakeBackend struct {
	first   rawToken
	fetched atomic.Int64
	next    func(n int64) rawToken
}

func (f *fakeBackend) getToken(context.Context, time.Duration) (rawToken, error) {
	return f.next(f.fetched.Add(1)), nil
}

func (f *fakeBackend) invalidate(context.Context, string) (rawToken, error) {
	return rawToken{}, errors.New("not used")
}

func (f *fakeBackend) watch(ctx context.Context) (stream, error) {
	return &quietStream{ctx: ctx, first: &f.first}, nil
}

func (f *fakeBackend) kind(error) error { return nil }

type quietStream struct {
	ctx   context.Context
	first *rawToken
}

func (q *quietStream) recv() (update, error) {
	if t := q.first; t != nil {
		q.first = nil
		return update{tok: t, state: "ready"}, nil
	}
	<-q.ctx.Done()
	return update{}, q.ctx.Err()
}

func (q *quietStream) close() {}

// TestTokenRefreshesWhenWallClockPassesFreshUntil: Token answers from the
// cache up to the last microsecond before freshUntil and asks the broker
// from freshUntil on, by the wall clock.
func TestTokenRefreshesWhenWallClockPassesFreshUntil(t *testing.T) {
	now := time.Now()
	be := &fakeBackend{
		first: rawToken{access: "first", issued: now, expiry: now.Add(time.Hour)},
		next: func(n int64) rawToken {
			return rawToken{access: "refreshed", issued: now, expiry: now.Add(2 * time.Hour)}
		},
	}
	cfg := defaultSourceConfig()
	cfg.minValid = time.Minute
	s, err := startSource(t.Context(), be, "acme", nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	freshUntil := now.Add(time.Hour - time.Minute).UnixMicro()

	var clock atomic.Int64
	nowMicros = clock.Load
	defer func() { nowMicros = wallMicros }()

	clock.Store(freshUntil - 1)
	tok, err := s.Token()
	if err != nil || tok.AccessToken != "first" || be.fetched.Load() != 0 {
		t.Fatalf("1µs before freshUntil: Token = %v, %v after %d GetToken calls; want the cached token, no call", tok, err, be.fetched.Load())
	}
	clock.Store(freshUntil)
	tok, err = s.Token()
	if err != nil || tok.AccessToken != "refreshed" || be.fetched.Load() != 1 {
		t.Fatalf("at freshUntil: Token = %v, %v after %d GetToken calls; want a refreshed token from one call", tok, err, be.fetched.Load())
	}
}
