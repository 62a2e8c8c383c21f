// Package hygiene holds the checks the config loader runs on what it is
// given: that secret files are not readable by group or others, and that
// upstream token URLs use https unless they point at loopback or the
// tenant opts in.
//
// Errors name files and URLs but never carry file contents, and URLs in
// errors have any user info redacted.
package hygiene

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"runtime"
	"strings"
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
		return fmt.Errorf("hygiene: %w", err)
	}
	if fi.Mode().Perm()&0o044 != 0 {
		return &PermissionError{Path: path, Mode: fi.Mode()}
	}
	return nil
}

// CheckSecretFiles runs CheckFileMode on each path. With strict, every
// problem is returned, joined; otherwise permission problems are logged as
// warnings on log (nil discards them) and only other errors (a file that
// cannot be stat'ed) are returned. Empty paths are skipped.
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
		var pe *PermissionError
		switch {
		case err == nil:
		case errors.As(err, &pe) && !strict:
			log.Warn("secret file readable by group or others (strict_file_permissions: true makes this an error)",
				"file", pe.Path, "mode", fmt.Sprintf("%04o", pe.Mode.Perm()), "fix", "chmod 600 "+pe.Path)
		default:
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ErrInsecureURL is wrapped by CheckUpstreamURL's errors.
var ErrInsecureURL = errors.New("insecure upstream URL")

// CheckUpstreamURL checks a token_url or auth_server: it must be an
// absolute https URL, or http when its host is loopback (localhost,
// 127.0.0.0/8, ::1) or allowInsecureHTTP is set. User info in the URL is
// refused: credentials belong in the credentials file.
func CheckUpstreamURL(raw string, allowInsecureHTTP bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: not a URL", ErrInsecureURL)
	}
	shown := u.Redacted()
	switch {
	case u.User != nil:
		return fmt.Errorf("%w %s: must not contain user info; put credentials in the credentials file", ErrInsecureURL, shown)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%w %s: must be absolute, like https://idp.example.com/oauth/token", ErrInsecureURL, shown)
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && (IsLoopbackHost(u.Hostname()) || allowInsecureHTTP):
		return nil
	case u.Scheme == "http":
		return fmt.Errorf("%w %s: http sends the client secret in clear text; use https, or set allow_insecure_http: true on the tenant if the network is trusted", ErrInsecureURL, shown)
	}
	return fmt.Errorf("%w %s: scheme %q is not https", ErrInsecureURL, shown, u.Scheme)
}

// IsLoopbackHost reports whether host is "localhost" or a loopback IP.
// Other names are not resolved.
func IsLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// RootCAs returns the system roots plus the PEM certificates in caFile,
// for a tenant's ca_file (a private CA). With an empty caFile it returns
// nil, which means the system roots. Verification is never disabled.
func RootCAs(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("hygiene: ca_file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("hygiene: ca_file %s: no PEM certificates found", caFile)
	}
	return pool, nil
}
