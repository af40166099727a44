//go:build tools

// Package tools pins the kubeconform command built from this module.
package tools

import (
	_ "github.com/yannh/kubeconform/cmd/kubeconform"
)
