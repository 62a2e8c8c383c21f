package creds

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// ErrNotRegular is wrapped by the error of OpenFile and ReadFile for a path
// that is not a regular file (symlinks followed): a FIFO or device there
// must be an error, not a read that never ends.
var ErrNotRegular = errors.New("not a regular file")

// OpenFile opens the regular file at path for reading, without blocking
// whatever is there; anything else is an *fs.PathError wrapping
// ErrNotRegular that names its type.
func OpenFile(path string) (*os.File, error) {
	return OpenRegular(path, os.O_RDONLY, 0)
}

// OpenRegular is OpenFile with os.OpenFile's flag and perm, e.g. for a
// file the broker appends to.
func OpenRegular(path string, flag int, perm fs.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|openNonblock, perm)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("is %s, %w; point it at the file itself", typeName(fi.Mode()), ErrNotRegular)}
	}
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// ReadFile reads the regular file at path (OpenFile) of at most limit bytes.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := OpenFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, &fs.PathError{Op: "read", Path: path, Err: tooLarge(limit)}
	}
	return data, nil
}

// tooLarge is ReadFile's error for a file larger than its limit.
type tooLarge int64

func (n tooLarge) Error() string { return fmt.Sprintf("file is larger than %d bytes", int64(n)) }

// typeName names the kind of a file that is not regular.
func typeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m.IsDir():
		return "a directory"
	}
	return "an irregular file"
}
