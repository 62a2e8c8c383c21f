package creds_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/creds"
)

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestLoadPrivateKeyFileFormats(t *testing.T) {
	rsaKey := must(rsa.GenerateKey(rand.Reader, 2048))
	ecKey := must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))
	for _, tc := range []struct {
		name string
		data []byte
		want crypto.Signer
	}{
		{"PKCS#8 RSA", pemOf("PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(rsaKey))), rsaKey},
		{"PKCS#8 EC", pemOf("PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(ecKey))), ecKey},
		{"PKCS#1 RSA", pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), rsaKey},
		{"SEC1 EC", pemOf("EC PRIVATE KEY", must(x509.MarshalECPrivateKey(ecKey))), ecKey},
		{"SEC1 EC after EC PARAMETERS, CRLF", bytes.ReplaceAll(append(pemOf("EC PARAMETERS", []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}),
			pemOf("EC PRIVATE KEY", must(x509.MarshalECPrivateKey(ecKey)))...), []byte("\n"), []byte("\r\n")), ecKey},
		{"text around the block", append(append([]byte("Bag Attributes\n\tfriendlyName: acme\n"), pemOf("PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(ecKey)))...), "\n\n"...), ecKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "key.pem")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			k, err := creds.LoadPrivateKeyFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want := must(creds.NewPrivateKey(tc.want))
			if !k.Equal(want) || k.IsZero() {
				t.Error("loaded key differs from the one written")
			}
		})
	}
	// openssl ecparam -genkey: "EC PARAMETERS" then "EC PRIVATE KEY".
	if _, err := creds.LoadPrivateKeyFile("testdata/ec-with-params.pem"); err != nil {
		t.Errorf("openssl ecparam -genkey output: %v", err)
	}
}

func TestLoadPrivateKeyFileRefusals(t *testing.T) {
	ecKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	ecPEM := pemOf("PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(ecKey)))
	small := must(rsa.GenerateKey(rand.Reader, 1024))
	_, edKey := must2(ed25519.GenerateKey(rand.Reader))
	p224 := must(ecdsa.GenerateKey(elliptic.P224(), rand.Reader))
	for _, tc := range []struct {
		name string
		data []byte
		file string // testdata instead of data
		kind error
		want string
	}{
		{name: "encrypted PKCS#8", file: "encrypted-pkcs8.pem", kind: creds.ErrMalformed, want: "is encrypted; the broker reads only unencrypted keys"},
		{name: "encrypted legacy PEM", file: "encrypted-legacy.pem", kind: creds.ErrMalformed, want: "is encrypted"},
		{name: "secp256k1", file: "secp256k1.pem", kind: creds.ErrMalformed, want: "curve the broker does not support; use P-256 (ES256)"},
		{name: "P-224", data: pemOf("EC PRIVATE KEY", must(x509.MarshalECPrivateKey(p224))), kind: creds.ErrInvalidValue, want: "curve P-224, which JWS does not define"},
		{name: "RSA 1024", data: pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(small)), kind: creds.ErrInvalidValue, want: "RSA with 1024 bits; use at least 2048"},
		{name: "Ed25519", data: pemOf("PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(edKey))), kind: creds.ErrInvalidValue, want: "is Ed25519"},
		{name: "certificate", data: pemOf("CERTIFICATE", []byte{1, 2, 3}), kind: creds.ErrMalformed, want: `type "CERTIFICATE", not a private key`},
		{name: "public key", data: pemOf("PUBLIC KEY", must(x509.MarshalPKIXPublicKey(ecKey.Public()))), kind: creds.ErrMalformed, want: "the public part"},
		{name: "OpenSSH key", data: pemOf("OPENSSH PRIVATE KEY", []byte("openssh-key-v1")), kind: creds.ErrMalformed, want: "ssh-keygen -p -m PKCS8"},
		{name: "PKCS#1 label on PKCS#8", data: pemOf("RSA PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(ecKey))), kind: creds.ErrMalformed, want: "RSA PRIVATE KEY block does not parse"},
		{name: "two keys", data: append(ecPEM, ecPEM...), kind: creds.ErrMalformed, want: "more than one private key"},
		{name: "empty", data: nil, kind: creds.ErrMalformed, want: "holds no PEM private key"},
		{name: "a client secret", data: []byte("s3cr3t-client-secret\n"), kind: creds.ErrMalformed, want: "holds no PEM private key"},
		{name: "NUL byte", data: append([]byte{0}, ecPEM...), kind: creds.ErrMalformed, want: "a NUL, another control character or a non-ASCII byte (at byte offset 0)"},
		{name: "escape", data: append(ecPEM, 0x1b), kind: creds.ErrMalformed, want: "ASCII text"},
		{name: "Latin-1 byte", data: append([]byte("caf\xe9\n"), ecPEM...), kind: creds.ErrMalformed, want: "at byte offset 3"},
		{name: "DER instead of PEM", data: must(x509.MarshalPKCS8PrivateKey(ecKey)), kind: creds.ErrMalformed, want: "ASCII text"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			if tc.file == "" {
				path = filepath.Join(t.TempDir(), "key.pem")
				if err := os.WriteFile(path, tc.data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			k, err := creds.LoadPrivateKeyFile(path)
			fe, ok := errors.AsType[*creds.FileError](err)
			if !ok || !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) || !k.IsZero() {
				t.Fatalf("err = %v, want a *FileError (%v) naming %s and saying %q", err, tc.kind, path, tc.want)
			}
			if fe.Path != path {
				t.Errorf("FileError.Path = %q, want %q", fe.Path, path)
			}
			data, _ := os.ReadFile(path)
			if b, _ := pem.Decode(data); b != nil && len(b.Bytes) > 8 && bytes.Contains([]byte(err.Error()), b.Bytes[len(b.Bytes)-8:]) {
				t.Error("error quotes the key")
			}
		})
	}
}

func must2[A, B any](a A, b B, err error) (A, B) {
	if err != nil {
		panic(err)
	}
	return a, b
}

func TestLoadPrivateKeyFileNotRegular(t *testing.T) {
	_, err := creds.LoadPrivateKeyFile(t.TempDir())
	if !errors.Is(err, creds.ErrNotRegular) || !strings.Contains(err.Error(), "a directory") {
		t.Errorf("err = %v, want ErrNotRegular naming a directory", err)
	}
}

func TestPrivateKeyRedacts(t *testing.T) {
	ecKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	k := must(creds.NewPrivateKey(ecKey))
	raw := must(ecKey.Bytes())
	dec, hexD := new(big.Int).SetBytes(raw).String(), hex.EncodeToString(raw)
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "key", k, "in", struct{ Key creds.PrivateKey }{k})
	j := must(json.Marshal(struct{ Key creds.PrivateKey }{k}))
	txt := must(k.MarshalText())
	for _, s := range []string{k.String(), fmt.Sprintf("%v|%+v|%#v|%s|%q|%x|%d", k, k, k, k, k, k, k),
		fmt.Sprintf("%+v", struct{ Key creds.PrivateKey }{k}), logs.String(), string(j), string(txt)} {
		if !strings.Contains(s, creds.Redacted) || strings.Contains(s, dec) || strings.Contains(s, hexD) {
			t.Errorf("not redacted: %s", s)
		}
	}
	if (creds.PrivateKey{}).String() != "" || !(creds.PrivateKey{}).Equal(creds.PrivateKey{}) || k.Equal(creds.PrivateKey{}) {
		t.Error("zero key: want empty text, equal only to itself")
	}
	other := must(creds.NewPrivateKey(must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))))
	if k.Equal(other) || !k.Equal(must(creds.NewPrivateKey(ecKey))) {
		t.Error("Equal: want true only for the same key")
	}
	if _, err := creds.NewPrivateKey(must(ecdsa.GenerateKey(elliptic.P224(), rand.Reader))); err == nil {
		t.Error("NewPrivateKey accepted a P-224 key")
	}
}
