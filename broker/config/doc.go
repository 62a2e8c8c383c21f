// Package config loads the broker's YAML configuration file, or builds an
// equivalent single-tenant configuration from the environment.
//
// A config file looks like this (the README's Configuration and Security
// sections describe every key):
//
//	listen: 127.0.0.1:50051           # optional; default DefaultListen; or a Unix socket, or both:
//	# listen: [127.0.0.1:50051, unix:///run/tokenbroker/broker.sock]
//	unix_socket: {mode: "0660", group: tokenbroker, dir_mode: "0750"}  # the socket file; these are the defaults but group
//	tenants:
//	  - name: acme                    # required, unique; see names.ValidTenant
//	    credentials_file: acme.json   # a Kognic credentials file, or ...
//	  - name: globex
//	    token_url: https://idp.example.com/oauth2/token  # or auth_server
//	    client_id: globex-broker      # ... client_id and client_secret_file
//	    client_secret_file: /etc/tokenbroker/globex.secret
//	    scopes: [read:inputs]         # optional default scopes
//	    auth_style: basic             # body (default) or basic
//	    ca_file: corp-ca.pem          # optional private CA for the token endpoint
//	    allow_insecure_http: false    # true permits http to a non-loopback host
//	  - name: initech                 # private_key_jwt (RFC 7523): no secret
//	    token_url: https://idp.example.com/oauth2/token
//	    client_id: initech-broker
//	    auth_style: private_key_jwt
//	    client_assertion_key_file: initech.pem  # PEM RSA or EC key; or client_assertion_key_files: [new.pem, old.pem]
//	    key_id: initech-1             # optional JWS kid; default the key's RFC 7638 thumbprint
//	    assertion_audience: https://idp.example.com/  # optional aud; default the token URL
//	tenants_dir: tenants              # optional: one file per tenant, keys as above
//	strict_file_permissions: true     # group/other-readable secret files are errors
//	tls: {cert_file: tls.crt, key_file: tls.key, client_ca_file: clients.pem}
//	callers:                          # absent: loopback clients only, no authentication
//	  - name: billing
//	    spiffe_id: spiffe://prod/ns/billing/sa/api  # or dns_name, common_name, api_key_sha256, unix_uid, unix_gid
//	    tenants: [acme, "team-*"]     # globs
//	audit: {path: audit.log}          # "-" for stdout
//	limits: {requests_per_second: 50} # limits.Limits declares the keys
//	watch: {enabled: true, interval: 30s}
//	admin: {listen: 127.0.0.1:9464, hosts: [tokenbroker.monitoring.svc]}
//	oauth: {listen: 127.0.0.1:8443}   # optional: the OAuth2 token endpoint; off when absent
//	shutdown: {drain: 5s, timeout: 10s}
//
// The file and each tenants_dir file (.yaml, .yml or .json, dot-files
// skipped; a tenant is named by its name key, else its file name) are
// decoded strictly: unknown or duplicate keys, wrong types, a second YAML
// document and an empty file are errors. One validation pass follows. Every
// error is an *[Error] naming the file, line, field path and fix, e.g.
//
//	config: broker.yaml:7: tenants[1].name: duplicate tenant name "acme" (first on line 3); tenant names must be unique
//
// Relative paths resolve against the naming file's directory. Secret files
// are read at load time into values that redact themselves (creds.Secret,
// creds.PrivateKey); a group- or other-readable one is a warning, or an
// error with strict_file_permissions. Upstream URLs must be https unless
// loopback or allow_insecure_http. The access policy checks the callers'
// globs and SPIFFE IDs; Config.ErrorAt gives its errors a line. Config.Files
// lists the files read, which the daemon watches.
//
// The package knows nothing of gRPC, the access policy or the broker core.
package config
