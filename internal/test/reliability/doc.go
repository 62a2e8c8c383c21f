// Package reliability holds the reliability proofs of issue 10 that live in
// the repository, as tests (this package has no production code):
//
//   - TestFaultMatrix: every identity-provider fault (5xx, 429 with
//     Retry-After, hang, connection reset, garbage, HTML, no access_token,
//     absurd expires_in, invalid_client, slow, TLS with a wrong CA, a
//     redirect) injected by an HTTPS reverse proxy (Front) in front of the
//     in-process dev IdP, through a real broker and gRPC server on
//     loopback. For each mode: no call fails while a valid token is cached;
//     without one, callers get the documented gRPC code and a message that
//     names the cause and never the secret; the IdP sees no more requests
//     than the backoff allows; and service recovers within a bound after
//     the fault clears (measured values are logged).
//   - TestReplicaFailover: three broker processes (the real binary) behind
//     one clientlib target; one is SIGKILLed and one SIGTERMed under steady
//     HTTP traffic through a clientlib HTTP client, without a failed
//     request; the failover time is logged.
//   - TestSoak (opt-in: TOKENBROKER_SOAK=1, TOKENBROKER_SOAK_DURATION,
//     default 10m): 50 tenants with short tokens under rotating faults,
//     steady GetToken calls and watchers; reports goroutines, heap and RSS
//     at start and end and bounds their growth.
//
// Everything runs on loopback and is bounded in time.
package reliability
