//go:build tools

// Package tools records the main package build.sh builds.
package tools

import _ "github.com/ovh/okms-cli/cmd/okms"
