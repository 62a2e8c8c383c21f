package authn

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

// TLSFiles names the files of the broker's TLS listener.
type TLSFiles struct {
	// CertFile and KeyFile are the PEM server certificate (chain) and key.
	CertFile, KeyFile string
	// ClientCAFile, if set, is a PEM bundle of CAs that verify client
	// certificates; clients without one may still connect (to use API
	// keys) unless RequireClientCert is set.
	ClientCAFile      string
	RequireClientCert bool
}

// DefaultReloadInterval is how often Watch looks at the files by default.
const DefaultReloadInterval = 10 * time.Second

// Reloader serves TLS from files and picks up new contents without a
// restart: each handshake uses the last successful load. It is safe for
// concurrent use.
type Reloader struct {
	files TLSFiles
	log   *slog.Logger

	mu     sync.RWMutex
	cert   *tls.Certificate
	pool   *x509.CertPool
	digest [sha256.Size]byte
}

// NewReloader loads the files once; an error means they are unusable.
// log receives reload outcomes; nil discards them.
func NewReloader(files TLSFiles, log *slog.Logger) (*Reloader, error) {
	if files.CertFile == "" || files.KeyFile == "" {
		return nil, errors.New("authn: tls needs both cert_file and key_file")
	}
	if files.RequireClientCert && files.ClientCAFile == "" {
		return nil, errors.New("authn: tls.require_client_cert needs tls.client_ca_file")
	}
	r := &Reloader{files: files, log: cmp.Or(log, slog.New(slog.DiscardHandler))}
	if _, err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files (regular files only, never a read that blocks)
// and installs them if their contents changed since the last successful
// load; on error the previous certificate stays in use.
func (r *Reloader) Reload() (changed bool, err error) {
	certPEM, err := creds.ReadFile(r.files.CertFile, creds.MaxFileSize)
	if err != nil {
		return false, fmt.Errorf("authn: read tls.cert_file: %w", err)
	}
	keyPEM, err := creds.ReadFile(r.files.KeyFile, creds.MaxFileSize)
	if err != nil {
		return false, fmt.Errorf("authn: read tls.key_file: %w", err)
	}
	var caPEM []byte
	if r.files.ClientCAFile != "" {
		if caPEM, err = creds.ReadFile(r.files.ClientCAFile, creds.MaxFileSize); err != nil {
			return false, fmt.Errorf("authn: read tls.client_ca_file: %w", err)
		}
	}
	h := sha256.New()
	for _, b := range [][]byte{certPEM, keyPEM, caPEM} {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	var digest [sha256.Size]byte
	h.Sum(digest[:0])

	r.mu.RLock()
	same := r.cert != nil && bytes.Equal(digest[:], r.digest[:])
	r.mu.RUnlock()
	if same {
		return false, nil
	}

	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The error of X509KeyPair names no key material.
		return false, fmt.Errorf("authn: tls.cert_file %s and tls.key_file %s: %w", r.files.CertFile, r.files.KeyFile, err)
	}
	var pool *x509.CertPool
	if caPEM != nil {
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return false, fmt.Errorf("authn: tls.client_ca_file %s: no PEM certificates found", r.files.ClientCAFile)
		}
	}
	r.mu.Lock()
	r.cert, r.pool, r.digest = &cert, pool, digest
	r.mu.Unlock()
	if cert.Leaf != nil {
		r.log.Info("TLS certificate loaded", "cert_file", r.files.CertFile,
			"subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter)
	}
	return true, nil
}

// Watch calls Reload every interval (DefaultReloadInterval if <= 0)
// until ctx is done, logging failures; the running certificate is kept
// when a reload fails. Call Reload directly to reload on a signal.
func (r *Reloader) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultReloadInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	r.watch(ctx, t.C)
}

func (r *Reloader) watch(ctx context.Context, tick <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			if _, err := r.Reload(); err != nil {
				r.log.Warn("TLS reload failed; keeping the current certificate", "error", err)
			}
		}
	}
}

// TLSConfig returns a server tls.Config (TLS 1.2 or later) that takes the
// current certificate and client CAs at every handshake.
func (r *Reloader) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			r.mu.RLock()
			cert, pool := r.cert, r.pool
			r.mu.RUnlock()
			c := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{*cert},
				NextProtos:   []string{"h2"},
			}
			if pool != nil {
				c.ClientCAs = pool
				c.ClientAuth = tls.VerifyClientCertIfGiven
				if r.files.RequireClientCert {
					c.ClientAuth = tls.RequireAndVerifyClientCert
				}
			}
			return c, nil
		},
	}
}

// Credentials returns gRPC transport credentials for TLSConfig, for
// grpc.Creds.
func (r *Reloader) Credentials() credentials.TransportCredentials {
	return credentials.NewTLS(r.TLSConfig())
}
