// Package creds loads OAuth2 client credentials for the Kognic API and
// keeps the client secret out of logs and error messages.
//
// A [Secret] redacts itself in every textual form the standard library
// produces (fmt verbs, log/slog, encoding/json, encoding/text);
// [Secret.Reveal] is the only way to read it.
//
// Credentials come from a Kognic credentials file ([LoadFile], [ParseFile]),
// from a file holding only a secret ([LoadSecretFile]), or from the
// environment ([FromEnv]) as the Kognic SDKs read it: KOGNIC_CREDENTIALS, else
// KOGNIC_CLIENT_ID and KOGNIC_CLIENT_SECRET. A private_key_jwt client's PEM
// key file is read by [LoadPrivateKeyFile] into a [PrivateKey], which
// redacts itself like a Secret.
//
// Errors name the file and the JSON key at fault and say how to fix it. They
// never contain the client secret, nor any bytes of a file that failed to
// parse. File problems are returned as a *[FileError] wrapping one of the
// sentinel errors ([ErrMissingKey], [ErrInvalidValue], [ErrExpired],
// [ErrMalformed]) or the underlying I/O error.
//
// This package depends on the standard library only; its functions are safe
// for concurrent use.
package creds
