package creds

import (
	"errors"
	"fmt"
	"io/fs"
)

// ErrNoCredentials is returned by FromEnv when the environment holds no
// credentials at all.
var ErrNoCredentials = errors.New("credentials: none found: set KOGNIC_CREDENTIALS to a credentials file, or KOGNIC_CLIENT_ID and KOGNIC_CLIENT_SECRET")

// Kinds of problem with a credentials or secret file, wrapped by *FileError.
var (
	// ErrMalformed: the file is too large, not text, not a JSON object,
	// or (a secret file) empty or more than one line.
	ErrMalformed = errors.New("credentials: malformed file")
	// ErrMissingKey: a required key is absent.
	ErrMissingKey = errors.New("credentials: missing required key")
	// ErrInvalidValue: a key has the wrong type or an unusable value.
	ErrInvalidValue = errors.New("credentials: invalid value")
	// ErrExpired: the credentials expired (key "expires").
	ErrExpired = errors.New("credentials: expired")
)

// FileError is a problem with a credentials, secret, key or environments
// file. Its message never contains the secret or raw file contents.
type FileError struct {
	Path string
	Key  string // the JSON key at fault; "" for the whole file
	// Err is one of the kinds above or the error reading the file.
	Err error

	msg string // what is wrong and how to fix it
	env string // environment variable that named Path, if any
}

func (e *FileError) Error() string {
	where := e.Path
	if e.env != "" {
		where = e.env + "=" + e.Path
	}
	return "credentials: " + where + ": " + e.msg
}

func (e *FileError) Unwrap() error { return e.Err }

func fileErr(path, key string, kind error, format string, args ...any) *FileError {
	return &FileError{Path: path, Key: key, Err: kind, msg: fmt.Sprintf(format, args...)}
}

// readErr describes err from opening or reading path without repeating path.
func readErr(path string, err error) *FileError {
	if n, ok := errors.AsType[tooLarge](err); ok {
		return fileErr(path, "", ErrMalformed, "file is larger than %d bytes; point to the credentials file itself", int64(n))
	}
	msg := err.Error()
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		msg = fmt.Sprintf("cannot %s file: %v", pe.Op, pe.Err)
	}
	return &FileError{Path: path, Err: err, msg: msg}
}
