//go:build tools

// Package tools pins the Helm CLI the local stack installs Ferry's chart with: `go build` of this import
// path, in this module, gives helm at the version go.mod requires.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
