package broker

import (
	"context"
	"log/slog"
	"sync"
)

// lazyWith is log.With(key, value) that defers the handler's work until
// the first record: slog handlers preformat attributes on With, which
// costs hundreds of bytes per logger, and a per-tenant logger that logs
// only on a credential rotation would hold them for nothing.
func lazyWith(log *slog.Logger, key, value string) *slog.Logger {
	return slog.New(&lazyHandler{base: log.Handler(), attr: slog.String(key, value)})
}

type lazyHandler struct {
	base slog.Handler
	attr slog.Attr
	once sync.Once
	h    slog.Handler
}

func (l *lazyHandler) get() slog.Handler {
	l.once.Do(func() { l.h = l.base.WithAttrs([]slog.Attr{l.attr}) })
	return l.h
}

func (l *lazyHandler) Enabled(ctx context.Context, lvl slog.Level) bool {
	return l.base.Enabled(ctx, lvl)
}

func (l *lazyHandler) Handle(ctx context.Context, r slog.Record) error { return l.get().Handle(ctx, r) }

func (l *lazyHandler) WithAttrs(as []slog.Attr) slog.Handler { return l.get().WithAttrs(as) }

func (l *lazyHandler) WithGroup(name string) slog.Handler { return l.get().WithGroup(name) }
