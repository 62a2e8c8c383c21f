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
// The package produces plain structs; it knows nothing of gRPC or of the
// broker core.
package config
