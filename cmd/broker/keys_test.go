package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeKey writes key as PKCS#8 PEM with mode.
func writeKey(t *testing.T, dir, name string, key crypto.Signer, mode os.FileMode) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// privateForms are the ways a private key's secret numbers could appear.
func privateForms(key crypto.Signer) []string {
	var nums []*big.Int
	switch k := key.(type) {
	case *rsa.PrivateKey:
		k.Precompute()
		nums = append([]*big.Int{k.D, k.Precomputed.Dp, k.Precomputed.Dq, k.Precomputed.Qinv}, k.Primes...)
	case *ecdsa.PrivateKey:
		raw, _ := k.Bytes()
		nums = []*big.Int{new(big.Int).SetBytes(raw)}
	}
	var out []string
	for _, n := range nums {
		b64 := base64.RawURLEncoding.EncodeToString(n.Bytes())
		out = append(out, n.String(), n.Text(16), b64[:min(len(b64), 16)])
	}
	return out
}

type jwksOut struct {
	Keys []map[string]any `json:"keys"`
}

func TestKeysPrintsOnlyPublicJWKS(t *testing.T) {
	dir := t.TempDir()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	oldKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	writeKey(t, dir, "rsa.pem", rsaKey, 0o600)
	writeKey(t, dir, "ec.pem", ecKey, 0o600)
	writeKey(t, dir, "old.pem", oldKey, 0o600)
	writeKey(t, dir, "readable.pem", ecKey, 0o644)
	writeFile(t, dir, "s", "a-secret\n")
	cfg := writeFile(t, dir, "broker.yaml", `tenants:
  - name: acme
    token_url: https://idp.example.com/token
    client_id: acme
    auth_style: private_key_jwt
    client_assertion_key_file: rsa.pem
    key_id: acme-1
  - name: globex
    token_url: https://idp.example.com/token
    client_id: globex
    auth_style: private_key_jwt
    client_assertion_key_files: [ec.pem, old.pem]
  - name: initech
    token_url: https://idp.example.com/token
    client_id: initech
    client_secret_file: s
  - name: broken
    token_url: https://idp.example.com/token
    client_id: broken
    auth_style: private_key_jwt
    client_assertion_key_file: missing.pem
`)
	for _, tc := range []struct {
		name     string
		args     []string
		keys     []crypto.Signer
		kids     []string // "" for the thumbprint
		wantWarn string
	}{
		{"tenant with key_id", []string{"keys", "--config", cfg, "--tenant", "acme"}, []crypto.Signer{rsaKey}, []string{"acme-1"}, ""},
		{"tenant rotating two keys", []string{"keys", "--config", cfg, "--tenant", "globex"}, []crypto.Signer{ecKey, oldKey}, []string{"", ""}, ""},
		{"key file", []string{"keys", "--key-file", filepath.Join(dir, "rsa.pem")}, []crypto.Signer{rsaKey}, []string{""}, ""},
		{"key file with key id", []string{"keys", "--key-file", filepath.Join(dir, "ec.pem"), "--key-id", "k-2"}, []crypto.Signer{ecKey}, []string{"k-2"}, ""},
		{"readable key file", []string{"keys", "--key-file", filepath.Join(dir, "readable.pem")}, []crypto.Signer{ecKey}, []string{""}, "chmod 600"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if err := run(t.Context(), tc.args, envFunc(), &out, &errOut); err != nil {
				t.Fatalf("%v\n%s", err, errOut.String())
			}
			var set jwksOut
			if err := json.Unmarshal(out.Bytes(), &set); err != nil || len(set.Keys) != len(tc.keys) {
				t.Fatalf("output %s: %v, want %d keys", out.String(), err, len(tc.keys))
			}
			for i, k := range set.Keys {
				checkJWK(t, k, tc.keys[i], tc.kids[i])
			}
			for _, key := range tc.keys {
				for _, f := range privateForms(key) {
					if strings.Contains(out.String()+errOut.String(), f) {
						t.Errorf("output holds a private number (%s…)", f[:8])
					}
				}
			}
			if !strings.Contains(errOut.String(), tc.wantWarn) || tc.wantWarn == "" && errOut.Len() > 0 {
				t.Errorf("stderr %q, want %q", errOut.String(), tc.wantWarn)
			}
		})
	}
}

// checkJWK checks that k is key's public JWK, with kid unless that is ""
// (the thumbprint), and holds no private member.
func checkJWK(t *testing.T, k map[string]any, key crypto.Signer, kid string) {
	t.Helper()
	for _, m := range []string{"d", "p", "q", "dp", "dq", "qi"} {
		if _, ok := k[m]; ok {
			t.Errorf("JWK %v has the private member %q", k["kid"], m)
		}
	}
	if k["use"] != "sig" || k["kid"] == "" || (kid != "" && k["kid"] != kid) {
		t.Errorf("JWK: use %v kid %v, want sig and %q", k["use"], k["kid"], kid)
	}
	switch pub := key.Public().(type) {
	case *rsa.PublicKey:
		if k["kty"] != "RSA" || k["alg"] != "RS256" || k["n"] != base64.RawURLEncoding.EncodeToString(pub.N.Bytes()) || k["e"] != "AQAB" {
			t.Errorf("JWK = %v, want the RSA public key, RS256", k)
		}
	case *ecdsa.PublicKey:
		if k["kty"] != "EC" || k["crv"] != pub.Curve.Params().Name || k["x"] == nil || k["y"] == nil || !strings.HasPrefix(k["alg"].(string), "ES") {
			t.Errorf("JWK = %v, want the EC public key", k)
		}
	}
}

func TestKeysErrors(t *testing.T) {
	dir := t.TempDir()
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key := writeKey(t, dir, "ec.pem", ecKey, 0o600)
	writeFile(t, dir, "s", "a-secret\n")
	cfg := writeFile(t, dir, "broker.yaml", "tenants:\n  - name: initech\n    token_url: https://idp.example.com/token\n    client_id: initech\n    client_secret_file: s\n"+
		"  - name: broken\n    token_url: https://idp.example.com/token\n    client_id: b\n    auth_style: private_key_jwt\n    client_assertion_key_file: cert.pem\n")
	writeFile(t, dir, "cert.pem", "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"nothing", []string{"keys"}, "keys: give either --config with --tenant, or --key-file"},
		{"both", []string{"keys", "--config", cfg, "--key-file", key}, "keys: give either --config with --tenant, or --key-file"},
		{"config without tenant", []string{"keys", "--config", cfg}, "keys: --config needs --tenant NAME"},
		{"tenant with key file", []string{"keys", "--key-file", key, "--tenant", "x"}, "keys: --tenant goes with --config"},
		{"key id with config", []string{"keys", "--config", cfg, "--tenant", "initech", "--key-id", "k"}, "keys: --key-id goes with --key-file"},
		{"unknown tenant", []string{"keys", "--config", cfg, "--tenant", "acme"}, `keys: no tenant "acme" in ` + cfg},
		{"secret tenant", []string{"keys", "--config", cfg, "--tenant", "initech"}, `keys: tenant "initech" authenticates with a client secret (auth_style body), not private_key_jwt`},
		{"broken key file", []string{"keys", "--config", cfg, "--tenant", "broken"}, `config: ` + cfg + `:10: tenants[1].client_assertion_key_file: tenant "broken": credentials: ` + filepath.Join(dir, "cert.pem") + `: holds a PEM block of type "CERTIFICATE", not a private key`},
		{"secret file as key", []string{"keys", "--key-file", filepath.Join(dir, "s")}, "credentials: " + filepath.Join(dir, "s") + ": holds no PEM private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(t.Context(), tc.args, envFunc(), &out, &errOut)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) || out.Len() > 0 {
				t.Errorf("err %v, stdout %q; want an error starting %q and no output", err, out.String(), tc.want)
			}
			if strings.Contains(errOut.String()+err.Error(), "a-secret") {
				t.Error("a secret reached the output")
			}
		})
	}
}
