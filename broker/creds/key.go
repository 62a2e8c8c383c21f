package creds

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
)

// MinRSABits is the smallest RSA key accepted for signing client
// assertions (RFC 7518 §3.3: 2048 bits or larger for RS256).
const MinRSABits = 2048

// PrivateKey is a private_key_jwt signing key (RFC 7523): RSA of at least
// MinRSABits bits, or ECDSA on P-256, P-384 or P-521. Like Secret it
// redacts itself in every textual form; Signer is the only way to the key.
// The zero value holds no key.
type PrivateKey struct{ key crypto.Signer }

// Signer returns the key; call it only where an assertion is signed.
func (k PrivateKey) Signer() crypto.Signer { return k.key }

// Public returns the public half of the key, nil for the zero value.
func (k PrivateKey) Public() crypto.PublicKey {
	if k.key == nil {
		return nil
	}
	return k.key.Public()
}

// IsZero reports whether k holds no key.
func (k PrivateKey) IsZero() bool { return k.key == nil }

// Equal reports whether k and o are the same key, in constant time.
func (k PrivateKey) Equal(o PrivateKey) bool {
	if k.key == nil || o.key == nil {
		return k.key == nil && o.key == nil
	}
	eq, ok := k.key.(interface{ Equal(crypto.PrivateKey) bool })
	return ok && eq.Equal(o.key)
}

// shown is what k shows in every textual form: a Secret's redaction.
func (k PrivateKey) shown() Secret {
	if k.key == nil {
		return ""
	}
	return Redacted
}

// The textual forms, as a Secret's: [Redacted], or "" for no key.
func (k PrivateKey) String() string                { return k.shown().String() }
func (k PrivateKey) GoString() string              { return k.shown().GoString() }
func (k PrivateKey) Format(f fmt.State, verb rune) { k.shown().Format(f, verb) }
func (k PrivateKey) LogValue() slog.Value          { return k.shown().LogValue() }
func (k PrivateKey) MarshalJSON() ([]byte, error)  { return k.shown().MarshalJSON() }
func (k PrivateKey) MarshalText() ([]byte, error)  { return k.shown().MarshalText() }

// NewPrivateKey wraps a key made in code (tests, the development IdP),
// checked as a key file's is: *rsa.PrivateKey or *ecdsa.PrivateKey.
func NewPrivateKey(key crypto.Signer) (PrivateKey, error) {
	if p := keyProblem(key); p != "" {
		return PrivateKey{}, fmt.Errorf("credentials: private key %s", p)
	}
	return PrivateKey{key: key}, nil
}

// LoadPrivateKeyFile reads a PEM file holding one unencrypted private key
// (PKCS#8, PKCS#1 or SEC1) as ASCII text. Anything else in it is an error
// wrapping ErrMalformed; an unsupported key wraps ErrInvalidValue, a path
// that is not a regular file ErrNotRegular. Errors never quote the file.
func LoadPrivateKeyFile(path string) (PrivateKey, error) {
	path, data, err := readHome(path)
	if err != nil {
		return PrivateKey{}, err
	}
	return ParsePrivateKey(data, path)
}

// ParsePrivateKey parses the contents of a private key file (see
// LoadPrivateKeyFile); name is used in errors.
func ParsePrivateKey(data []byte, name string) (PrivateKey, error) {
	if i := strings.IndexFunc(string(data), func(r rune) bool {
		return r > 0x7e || r < 0x20 && r != '\t' && r != '\n' && r != '\r'
	}); i >= 0 {
		return PrivateKey{}, fileErr(name, "", ErrMalformed, "holds a NUL, another control character or a non-ASCII byte (at byte offset %d); a PEM private key is ASCII text: give the key file itself", i)
	}
	found, err := keyBlock(data, name)
	if err != nil {
		return PrivateKey{}, err
	}
	key, err := parseKeyBlock(found)
	if err != nil {
		return PrivateKey{}, fileErr(name, "", ErrMalformed, "%s", err)
	}
	if p := keyProblem(key); p != "" {
		return PrivateKey{}, fileErr(name, "", ErrInvalidValue, "the private key %s", p)
	}
	return PrivateKey{key: key}, nil
}

// keyBlock returns the one private key block of data.
func keyBlock(data []byte, name string) (*pem.Block, error) {
	var found *pem.Block
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		switch {
		case b.Type == "EC PARAMETERS": // openssl ecparam -genkey writes it first
			continue
		case b.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED"):
			return nil, fileErr(name, "", ErrMalformed, "the private key is encrypted; the broker reads only unencrypted keys (protect the file with its mode instead): write a decrypted copy with openssl pkey -in KEY -out KEY.plain")
		case !privateKeyTypes[b.Type]:
			return nil, fileErr(name, "", ErrMalformed, "holds a PEM block of type %s, not a private key; give the PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)%s", pemType(b.Type), typeHint(b.Type))
		case found != nil:
			return nil, fileErr(name, "", ErrMalformed, "holds more than one private key; give one key per file (list several under client_assertion_key_files during a rotation)")
		}
		found = b
	}
	if found == nil {
		return nil, fileErr(name, "", ErrMalformed, "holds no PEM private key; give the key in PEM (-----BEGIN PRIVATE KEY----- …), e.g. from openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256")
	}
	return found, nil
}

// privateKeyTypes are the PEM types of the unencrypted private keys read.
var privateKeyTypes = map[string]bool{"PRIVATE KEY": true, "RSA PRIVATE KEY": true, "EC PRIVATE KEY": true}

// parseKeyBlock parses a private key block. Its error names the format
// and never quotes the block (x509's texts are replaced).
func parseKeyBlock(b *pem.Block) (crypto.Signer, error) {
	var (
		key any
		err error
	)
	switch b.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	}
	switch {
	case err != nil && strings.Contains(err.Error(), "unknown elliptic curve"):
		return nil, fmt.Errorf("the EC private key is on a curve the broker does not support; use P-256 (ES256), P-384 (ES384) or P-521 (ES512)")
	case err != nil:
		return nil, fmt.Errorf("the %s block does not parse as a private key in that format; regenerate it, or convert it with openssl pkey -in KEY -out KEY.pem", b.Type)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("the %s block holds a key type the broker does not support; use RSA (2048 bits or more) or EC P-256", b.Type)
	}
	return s, nil
}

// keyProblem says why key cannot sign client assertions, or returns "".
func keyProblem(key crypto.Signer) string {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if n := k.N.BitLen(); n < MinRSABits {
			return fmt.Sprintf("is RSA with %d bits; use at least %d (RS256 requires it): openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072", n, MinRSABits)
		}
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return fmt.Sprintf("is on curve %s, which JWS does not define; use P-256 (ES256), P-384 (ES384) or P-521 (ES512)", k.Curve.Params().Name)
		}
	case ed25519.PrivateKey:
		return "is Ed25519, which the broker does not sign with (few identity providers accept EdDSA client assertions); use RSA (2048 bits or more) or EC P-256"
	default:
		return "is neither RSA nor ECDSA; use RSA (2048 bits or more) or EC P-256"
	}
	return ""
}

// pemTypeSyntax is a PEM type label shown in errors; any other is not.
var pemTypeSyntax = regexp.MustCompile(`^[A-Z0-9 ]{1,40}$`)

func pemType(t string) string {
	if pemTypeSyntax.MatchString(t) {
		return strconv.Quote(t)
	}
	return "(not shown)"
}

// typeHint is the fix for a PEM block that is not a private key.
func typeHint(t string) string {
	switch {
	case t == "OPENSSH PRIVATE KEY":
		return "; convert it with ssh-keygen -p -m PKCS8 -f KEY (it rewrites the file in place)"
	case strings.Contains(t, "CERTIFICATE"), strings.Contains(t, "PUBLIC KEY"):
		return "; this is the public part, which the identity provider holds"
	}
	return ""
}
