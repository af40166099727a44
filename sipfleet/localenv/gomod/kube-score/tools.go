//go:build tools

// Package tools pins the kube-score command built from this module.
package tools

import (
	_ "github.com/zegl/kube-score/cmd/kube-score"
)
