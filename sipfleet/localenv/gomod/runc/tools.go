//go:build tools

// Package tools pins the runc command built from this module.
package tools

import (
	_ "github.com/opencontainers/runc"
)
