package daemon

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/tokenbroker/tokenbroker/broker/config"
	"github.com/tokenbroker/tokenbroker/broker/creds"
)

// Watching the files a configuration was read from (config.Config.Files),
// so that a rotated secret or an edited file is applied without SIGHUP.
// Events are watched on the parent directories (Kubernetes swaps a
// "..data" symlink; editors rename) and only trigger a comparison of
// SHA-256 digests, which also runs every interval for missed events. A
// changed digest reloads once it has stayed the same for watchDebounce and
// through the load, so a file being written is not applied half-way.

const (
	// defaultWatchInterval is how often the files' contents are compared
	// when the config sets no watch.interval.
	defaultWatchInterval = 30 * time.Second
	// watchDebounce gathers a burst of events (an atomic swap is several)
	// into one comparison, and is how long changed contents must stay
	// the same before they are applied.
	watchDebounce = 250 * time.Millisecond
)

// digest is a file's content as last seen; ok is false if it could not be
// read, so that a file appearing or disappearing counts as a change.
type digest struct {
	ok  bool
	sum [sha256.Size]byte
}

// watchState is what the daemon knows of its configuration's files. It
// is usable as a zero value (no files); Reload keeps it current.
type watchState struct {
	interval time.Duration
	off      bool

	rereadMu sync.Mutex // one Reread at a time: snapshot, load and apply stay in order

	mu       sync.Mutex // guards the fields below
	cur      *config.Config
	sums     map[string]digest
	failed   string        // the error of the last failed Reread, logged once
	rejected bool          // it was a refusal (ErrLowersSecurity), not retried
	refresh  chan struct{} // 1-slot: the set of files changed
}

func (w *watchState) init(cfg *config.Config) {
	w.interval, w.off = cfg.Watch.Interval, cfg.Watch.Disabled
	if w.interval <= 0 {
		w.interval = defaultWatchInterval
	}
	w.refresh = make(chan struct{}, 1)
	w.applied(cfg, nil)
}

// applied records cfg as the running configuration. snap holds the
// digests taken before cfg was loaded, so that a change made while it
// was loading is still noticed; files it lacks are read now, unless
// watching is off (at 50,000 tenant files, a second of a start).
func (w *watchState) applied(cfg *config.Config, snap map[string]digest) {
	sums := make(map[string]digest, len(cfg.Files))
	for _, f := range cfg.Files {
		if s, ok := snap[f]; ok || w.off {
			sums[f] = s
		} else {
			sums[f] = digestOf(f)
		}
	}
	w.mu.Lock()
	w.cur, w.sums, w.failed, w.rejected = cfg, sums, "", false
	w.mu.Unlock()
	select {
	case w.refresh <- struct{}{}:
	default:
	}
}

// files returns the watched files, sorted.
func (w *watchState) files() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Sorted(maps.Keys(w.sums))
}

// current is the running configuration.
func (w *watchState) current() *config.Config {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

// snapshot reads the watched files' digests and returns them with the
// files whose digest differs from the recorded one.
func (w *watchState) snapshot() (map[string]digest, []string) {
	files := w.files()
	snap := make(map[string]digest, len(files))
	for _, f := range files {
		snap[f] = digestOf(f)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var changed []string
	for _, f := range files {
		if old, ok := w.sums[f]; ok && old != snap[f] {
			changed = append(changed, f)
		}
	}
	return snap, changed
}

// digestOf reads the file at path (symlinks followed) up to a bound no
// config, credentials or certificate file reaches. What is not a regular
// file is not read (creds.OpenFile): a FIFO must not block the watcher.
// A directory (tenants_dir) is digested by its tenant files' names: one
// added or removed changes it.
func digestOf(path string) digest {
	f, err := creds.OpenFile(path)
	if errors.Is(err, creds.ErrNotRegular) {
		if names, err := config.TenantFiles(path); err == nil {
			return digest{ok: true, sum: sha256.Sum256([]byte(strings.Join(names, "\n")))}
		}
	}
	if err != nil {
		return digest{}
	}
	defer f.Close()
	h := sha256.New()
	buf := copyBufs.Get().(*[32 << 10]byte)
	defer copyBufs.Put(buf)
	if _, err := io.CopyBuffer(h, io.LimitReader(f, 4*config.MaxFileSize), buf[:]); err != nil {
		return digest{}
	}
	d := digest{ok: true}
	h.Sum(d.sum[:0])
	return d
}

// copyBufs are digestOf's buffers: io.Copy would allocate one per file.
var copyBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// errUnsettled is reread's error when a file changed while the
// configuration was loaded: nothing is applied, the watcher tries again.
var errUnsettled = errors.New("daemon: the configuration's files changed while they were read")

// Reread loads the configuration again with Options.Load and applies it
// with Reload, logging which tenants it changed (SIGHUP). On error the
// running configuration is kept. Like the watcher, it waits (at most
// maxSettle) until the files stay the same for watchDebounce and through
// the load, so that a file being written is not read half-way.
func (d *Daemon) Reread() error {
	deadline := time.Now().Add(maxSettle)
	for {
		snap, _ := d.watch.snapshot()
		time.Sleep(watchDebounce)
		if after, _ := d.watch.snapshot(); !maps.Equal(after, snap) && time.Now().Before(deadline) {
			continue // a writer is at work
		}
		err := d.reread(nil, snap)
		if !errors.Is(err, errUnsettled) || !time.Now().Before(deadline) {
			return err
		}
	}
}

// maxSettle bounds how long Reread waits for the files to settle.
const maxSettle = 5 * time.Second

// reread is Reread; changed names the files whose change triggered it,
// nil for a request (SIGHUP). settled, if not nil, holds the digests the
// files kept for the debounce interval (the watcher): if they differ
// after the load, a writer is still at work and nothing is applied
// (errUnsettled).
func (d *Daemon) reread(changed []string, settled map[string]digest) error {
	if d.opts.Load == nil {
		return errors.New("daemon: cannot re-read the configuration: Options.Load is not set")
	}
	w := &d.watch
	w.rereadMu.Lock()
	defer w.rereadMu.Unlock()
	snap, _ := w.snapshot()
	if settled != nil && !maps.Equal(snap, settled) {
		return errUnsettled
	}
	cfg, err := d.opts.Load()
	if settled != nil {
		if after, _ := w.snapshot(); !maps.Equal(after, snap) {
			return errUnsettled
		}
	}
	if err != nil {
		d.recordReload(err)
	} else {
		old := w.current()
		if err = d.reload(cfg, snap); err == nil {
			// w.current() is cfg with tenants whose files failed kept as they ran.
			added, removed, updated := tenantChanges(old, w.current(), changed)
			d.log.Info("configuration re-read", "changed_files", changed,
				"tenants_added", added, "tenants_removed", removed, "tenants_changed", updated)
			return nil
		}
	}
	// Record the files as seen, so that the same bad contents are not
	// reloaded again every interval. A refusal is not retried either:
	// only a change to the files can lift it.
	w.mu.Lock()
	for f, s := range snap {
		if _, ok := w.sums[f]; ok {
			w.sums[f] = s
		}
	}
	w.failed = err.Error()
	w.rejected = errors.Is(err, ErrLowersSecurity)
	w.mu.Unlock()
	return err
}

// watchFiles reloads when a file of the configuration changes and then
// stays the same for watchDebounce, until ctx is done. Without file
// system events (fsnotify unavailable) it compares contents every
// interval only.
func (d *Daemon) watchFiles(ctx context.Context) {
	w := &d.watch
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		d.log.Warn("file system events unavailable; changed files are noticed by comparing contents every interval", "interval", w.interval, "error", err)
	} else {
		defer fsw.Close()
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	if fsw != nil {
		events, errs = fsw.Events, fsw.Errors
	}
	dirs := map[string]bool{}
	relevant, _ := d.watchDirs(fsw, dirs)

	tick := time.NewTicker(w.interval)
	defer tick.Stop()
	// A first comparison: a file may have changed since New read it.
	debounce := time.NewTimer(watchDebounce)
	defer debounce.Stop()
	var pending map[string]digest // a change seen, waiting to stay the same
	d.log.Info("watching configuration files", "files", len(w.files()), "interval", w.interval)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if relevant(ev.Name) {
				debounce.Reset(watchDebounce)
			}
			continue
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			d.log.Warn("file watch error; changes are still noticed every interval", "interval", w.interval, "error", err)
			continue
		case <-w.refresh:
		case <-debounce.C:
			pending = d.checkFiles(pending, false)
		case <-tick.C:
			pending = d.checkFiles(pending, true)
		}
		var added bool
		if relevant, added = d.watchDirs(fsw, dirs); added || pending != nil {
			// A file may have changed between the re-read that named it
			// and its directory's watch, or a change waits to settle:
			// compare again.
			debounce.Reset(watchDebounce)
		}
	}
}

// checkFiles re-reads the configuration if a file changed and its
// contents are those of pending, the last comparison's, a debounce
// interval ago: a writer that is still at work (a truncated file being
// written) is waited for. On the interval (retry) it also re-reads if the
// last re-read failed, a missing file may have appeared without any
// watched file changing, unless it was refused for lowering the security.
// It returns the contents that must stay the same until the next
// comparison, nil if none.
func (d *Daemon) checkFiles(pending map[string]digest, retry bool) map[string]digest {
	w := &d.watch
	snap, changed := w.snapshot()
	w.mu.Lock()
	failed, rejected := w.failed, w.rejected
	w.mu.Unlock()
	var err error
	switch {
	case len(changed) > 0 && !maps.Equal(snap, pending):
		return snap
	case len(changed) > 0:
		err = d.reread(changed, snap)
	case retry && failed != "" && !rejected:
		err = d.reread(changed, nil)
	default:
		return nil
	}
	switch {
	case errors.Is(err, errUnsettled):
		return map[string]digest{} // compare again after the debounce
	case err == nil && failed != "":
		d.log.Info("configuration reload succeeded again")
	case err != nil && !errors.Is(err, ErrLowersSecurity) && err.Error() != failed:
		d.log.Error("config reload failed; keeping the running configuration", "files", changed, "error", err)
	}
	return nil
}

// watchDirs makes fsw (if any) watch the directories of the files, of
// their symlink targets and the tenants_dir, and returns the test for an
// event name worth a comparison (a watched file, its target, a tenants_dir
// entry, a Kubernetes "..data"-style entry) and whether it added a watch.
func (d *Daemon) watchDirs(fsw *fsnotify.Watcher, dirs map[string]bool) (relevant func(string) bool, added bool) {
	tenantsDir := d.watch.current().TenantsDir
	names, want := map[string]bool{}, map[string]bool{}
	if tenantsDir != "" {
		want[tenantsDir] = true
	}
	for _, f := range d.watch.files() {
		dir := filepath.Dir(f)
		names[f], want[dir] = true, true
		if t, err := filepath.EvalSymlinks(f); err == nil {
			names[t] = true
			// One watch per directory: inotify keys watches by inode.
			if real, err := filepath.EvalSymlinks(dir); err != nil || real != filepath.Dir(t) {
				want[filepath.Dir(t)] = true
			}
		}
	}
	relevant = func(name string) bool {
		name = filepath.Clean(name)
		return names[name] || strings.HasPrefix(filepath.Base(name), "..") || tenantsDir != "" && filepath.Dir(name) == tenantsDir
	}
	return relevant, fsw != nil && d.syncWatches(fsw, dirs, want)
}

// syncWatches makes fsw watch exactly the directories of want that exist;
// dirs holds the watched ones. It reports whether it added one.
func (d *Daemon) syncWatches(fsw *fsnotify.Watcher, dirs, want map[string]bool) (added bool) {
	for dir := range dirs {
		if !want[dir] {
			_ = fsw.Remove(dir) // fails if the directory is gone, which removed the watch
			delete(dirs, dir)
		}
	}
	for dir := range want {
		if dirs[dir] {
			continue
		}
		if err := fsw.Add(dir); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				d.log.Warn("cannot watch directory; its files are compared every interval", "dir", dir, "error", err)
			}
			continue
		}
		dirs[dir], added = true, true
	}
	return added
}

// tenantChanges names the tenants added, removed and changed from old to
// cfg: a changed upstream client or default scopes, or a ca_file among the
// changed files.
func tenantChanges(old, cfg *config.Config, changed []string) (added, removed, updated []string) {
	before := map[string]config.Tenant{}
	for _, t := range old.Tenants {
		before[t.Name] = t
	}
	for _, t := range cfg.Tenants {
		o, ok := before[t.Name]
		delete(before, t.Name)
		switch {
		case !ok:
			added = append(added, t.Name)
		case !sameUpstream(o, t) || !slices.Equal(o.Scopes, t.Scopes) || slices.Contains(changed, t.CAFile):
			updated = append(updated, t.Name)
		}
	}
	return added, slices.Sorted(maps.Keys(before)), updated
}
