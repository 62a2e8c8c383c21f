// Package kubernetes holds the tokenbroker kustomize base (base/, applied
// by the kustomization beside this file), the node-local overlay
// (overlays/node-local: a DaemonSet serving a Unix socket on each node)
// and the tests that keep them deployable: every manifest decodes
// strictly into its k8s.io/api type, `kustomize build` (pinned in
// tools/kustomize.mod) builds both, and they keep the invariants an
// operator relies on (non-root, read-only, probes, spread, drain time; the
// socket's directory, group and callers agree).
package kubernetes
