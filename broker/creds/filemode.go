package creds

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"runtime"
)

// PermissionError reports a secret file that group or others may read.
type PermissionError struct {
	Path string
	Mode fs.FileMode
}

func (e *PermissionError) Error() string {
	return fmt.Sprintf("%s has mode %04o: group or others can read it; it holds secrets, so run chmod 600 %s (or set defaultMode: 0400 on a Kubernetes secret volume)",
		e.Path, e.Mode.Perm(), e.Path)
}

// CheckFileMode returns a *PermissionError if the file at path (symlinks
// followed) is readable by group or others. On Windows it checks nothing.
func CheckFileMode(path string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	if fi.Mode().Perm()&0o044 != 0 {
		return &PermissionError{Path: path, Mode: fi.Mode()}
	}
	return nil
}

// CheckSecretFiles runs CheckFileMode on each non-empty path. With strict,
// every problem is returned, joined; otherwise permission problems are
// logged as warnings on log (nil discards them) and only other errors are.
func CheckSecretFiles(log *slog.Logger, strict bool, paths ...string) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var errs []error
	for _, p := range paths {
		if p == "" {
			continue
		}
		err := CheckFileMode(p)
		pe, isPerm := errors.AsType[*PermissionError](err)
		switch {
		case err == nil:
		case isPerm && !strict:
			log.Warn("secret file readable by group or others (strict_file_permissions: true makes this an error)",
				"file", pe.Path, "mode", fmt.Sprintf("%04o", pe.Mode.Perm()), "fix", "chmod 600 "+pe.Path)
		default:
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
