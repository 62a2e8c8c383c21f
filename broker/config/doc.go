// Package config loads the broker's YAML configuration file, or builds an
// equivalent single-tenant configuration from the environment.
//
// A config file looks like this:
//
//	listen: 127.0.0.1:50051           # optional; default DefaultListen
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
//
// and, for access control (see the guard package for what they mean):
//
//	strict_file_permissions: true     # group/other-readable secret files are errors
//	tls:
//	  cert_file: tls.crt              # required with key_file
//	  key_file: tls.key
//	  client_ca_file: clients.pem     # mutual TLS; needed by certificate callers
//	  require_client_cert: false
//	  reload_interval: 10s
//	callers:                          # absent: loopback clients only, no authentication
//	  - name: billing
//	    spiffe_id: spiffe://prod/ns/billing/sa/api  # or dns_name, common_name, api_key_sha256
//	    tenants: [acme, "team-*"]     # globs
//	    scopes: ["read:*"]            # optional
//	audit:
//	  path: audit.log                 # "-" for stdout
//	limits:
//	  requests_per_second: 50
//	  burst: 100
//	  max_streams_per_caller: 100
//	  max_scopes_per_request: 32
//	  max_message_bytes: 65536
//	watch:                            # the running broker notices changed files
//	  enabled: true                   # default; false: only SIGHUP reloads
//	  interval: 30s                   # content comparison, a fallback for missed events
//
// Config.Files lists the files a configuration was read from, which the
// daemon watches.
//
// and for operations:
//
//	admin:
//	  listen: 127.0.0.1:9464          # default; "" disables /healthz, /readyz, /metrics, status page
//	  hosts: [tokenbroker.monitoring.svc]  # Host names answered besides IP literals and localhost
//	shutdown:
//	  drain: 5s                       # serve NOT_SERVING this long after SIGTERM (0s: none)
//	  timeout: 10s                    # then in-flight calls get this long
//
// Upstream URLs must be https unless their host is loopback or the tenant
// sets allow_insecure_http. Secret files (credentials_file,
// client_secret_file, tls.key_file) readable by group or others are logged
// as warnings on Options.Logger, or are errors with strict_file_permissions.
// The callers' glob and SPIFFE ID syntax is checked by the access policy;
// Config.ErrorAt turns its errors into line-numbered ones.
//
// Parsing is strict: unknown keys, duplicate keys, wrong types, a second
// YAML document and an empty file are errors. Every error is a *[Error]
// naming the file, the line, the field path and the fix, for example
//
//	config: broker.yaml:7: tenants[1].name: duplicate tenant name "acme" (first on line 3); tenant names must be unique
//
// Relative file paths resolve against the config file's directory. The
// secrets are read at load time and held as credentials.Secret values, which
// redact themselves when printed or logged.
//
// The package produces plain structs; it knows nothing of gRPC, of the
// access policy or of the broker core.
package config
