// Package kubernetes holds the tokenbroker kustomize base (the YAML files
// beside this one) and the test that keeps it deployable: every manifest
// decodes strictly into its k8s.io/api type and keeps the invariants an
// operator relies on (non-root, read-only, probes, spread, drain time).
package kubernetes
